"""Issue 20's "also found" items on the command line and in the run folder: --version, sweep
--set/--seed, `kmemsim workloads` defaults, command descriptions, progress only on a TTY,
singular/plural, the common per-cache summary keys, Solaris' slabinfo tunables."""

from __future__ import annotations

import json
from importlib.metadata import version

import pytest
from test_bad_input import GOOD, cli, write

from experiments import sweep as sweep_mod
from experiments.cli import main
from experiments.load import load_sweep


def test_version(capsys):
    code, out, _ = cli(capsys, "--version")
    assert code == 0 and out.strip() == f"kmemsim {version('kmemsim')}"


def test_sweep_set_and_seed_apply_before_the_grid(tmp_path, capsys):
    path = write(tmp_path, GOOD + '\n[sweep]\npolicy = ["global_lock", "spl"]\n')
    out = tmp_path / "sw"
    code, stdout, _ = cli(capsys, "sweep", str(path), "--out", str(out), "--jobs", "1",
                          "--set", "machine.cpus_per_node=1", "--seed", "5")
    assert code == 0, stdout
    df = load_sweep(out)
    assert list(df.cpus) == [1, 1] and list(df.seed) == [5, 5]
    # a different --set is a different base experiment: its points are run, not reused
    ran = []
    real = sweep_mod.run_point
    try:
        sweep_mod.run_point = lambda *a: ran.append(a[2].id) or real(*a)
        sweep_mod.run_sweep(path, out, jobs=1, progress=False,
                            overrides=["machine.cpus_per_node=2"], seed=5)
        assert len(ran) == 2
        ran.clear()
        sweep_mod.run_sweep(path, out, jobs=1, progress=False,
                            overrides=["machine.cpus_per_node=2"], seed=5)
        assert ran == []  # the same base again: resumed, nothing to run
    finally:
        sweep_mod.run_point = real
    assert list(load_sweep(out).cpus) == [2, 2]


def test_sweep_set_problem_names_set(tmp_path, capsys):
    path = write(tmp_path, GOOD + '\n[sweep]\nseed = [1, 2]\n')
    code, _, err = cli(capsys, "sweep", str(path), "--out", str(tmp_path / "sw"),
                       "--set", "machine.cpus_per_node=true")
    assert code == 2 and err == ["kmemsim: error: --set machine.cpus_per_node: expected an "
                                 "integer, got true (booleans are not numbers)"]
    assert not (tmp_path / "sw").exists()


def test_workloads_lists_required_parameters_and_durations_with_units(capsys):
    code, out, _ = cli(capsys, "workloads")
    assert code == 0
    assert "PydanticUndefined" not in out and "{'" not in out
    trace = out.split("trace:")[1].split("\n\n")[0]
    assert "    file = (required)" in trace
    steady = out.split("steady:")[1].split("\n\n")[0]
    # durations with units; the default lifetime shows only the keys that apply to it
    assert '    think = "0ns"' in steady
    assert '    lifetime = { dist = "exponential", mean = "50us" }' in steady
    assert "sigma" not in steady.split("lifetime =")[1].splitlines()[0]
    assert "    stop = (not set)" in steady


@pytest.mark.parametrize("command,words", [("policies", "tunable"), ("workloads", "(required)"),
                                           ("costs", "nanoseconds")])
def test_listing_commands_have_descriptions(capsys, command, words):
    code, out, _ = cli(capsys, command, "--help")
    assert code == 0 and words in out


def test_no_progress_frames_when_stderr_is_not_a_terminal(tmp_path, capsys):
    path = write(tmp_path, GOOD + '\n[sweep]\nseed = [1, 2]\n')
    sweep_mod.run_sweep(path, tmp_path / "sw", jobs=1, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err and "point/s" not in err


def test_singular_cpu_and_point(tmp_path, capsys):
    cfg = write(tmp_path, GOOD.replace("cpus_per_node = 2", "cpus_per_node = 1")
                + '\n[sweep]\nseed = [1]\n')
    code, out, _ = cli(capsys, "run", str(cfg), "--out", str(tmp_path / "r"))
    assert code == 0 and ", 1 CPU, " in out and "1 CPUs" not in out
    code, out, _ = cli(capsys, "sweep", str(cfg), "--out", str(tmp_path / "s"), "--jobs", "1")
    assert code == 0 and out.startswith("1 point: 1 ok")


TWO_CACHES = (GOOD + '\n[[caches]]\nname = "big"\nsize = 65536\n').replace(
    'caches = ["buf_512"]', 'caches = ["buf_512", "big"]')


def _summary(tmp_path, policy: str) -> dict:
    out = tmp_path / "r"
    assert main(["run", str(write(tmp_path, TWO_CACHES)), "--out", str(out), "--no-progress",
                 "--set", f"policy.name={policy}"]) == 0
    return json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("policy", ["global_lock", "spl", "solaris", "linux_slab"])
def test_common_per_cache_summary_keys(tmp_path, policy):
    s = _summary(tmp_path, policy)
    caches = s["caches"]
    assert set(caches) == {"buf_512", "big"}
    for name, c in caches.items():
        for key in ("allocs", "frees", "alloc_fail", "objs_inuse", "objs_cached", "objs_free",
                    "slabs", "bytes_total"):
            assert key in c, (policy, name, key)
    assert sum(c["allocs"] for c in caches.values()) == s["ops"]["allocs"]
    assert sum(c["frees"] for c in caches.values()) == s["ops"]["frees"]


@pytest.mark.parametrize("policy", ["global_lock", "spl", "solaris", "linux_slab"])
def test_common_counts_agree_with_the_kernels_own(tmp_path, policy):
    for name, c in _summary(tmp_path, policy)["caches"].items():
        # the workload's allocations less its frees are the objects it still holds
        assert c["allocs"] - c["frees"] == c["objs_inuse"], (policy, name)
        # a kernel counter under a common name that disagrees is kept as <policy>.<name>
        assert not [k for k in c if k.startswith(f"{policy}.")], c


def test_solaris_slabinfo_says_not_applicable(tmp_path):
    out = tmp_path / "r"
    assert main(["run", str(write(tmp_path, GOOD)), "--out", str(out), "--no-progress",
                 "--set", "policy.name=solaris"]) == 0
    row = next(ln for ln in (out / "slabinfo.txt").read_text().splitlines()
               if ln.startswith("buf_512"))
    assert ": tunables  n/a  n/a  n/a :" in row


def test_linux_slab_slabinfo_keeps_its_tunables(tmp_path):
    out = tmp_path / "r"
    assert main(["run", str(write(tmp_path, GOOD)), "--out", str(out), "--no-progress",
                 "--set", "policy.name=linux_slab"]) == 0
    assert "n/a" not in (out / "slabinfo.txt").read_text()
