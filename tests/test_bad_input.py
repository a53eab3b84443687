"""Issue 20's table of bad inputs, one test per row: each gets one line per problem naming the
file (or --set), the key and the reason, exit status 2, and nothing written; never a traceback
or a silent run."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
from experiment_text import GOOD

from experiments import sweep as sweep_mod
from experiments.cli import main


def write(tmp_path: Path, text: str, name: str = "exp.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, list[str]]:
    code = main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out, cap.err.strip().splitlines()


def bad_run(tmp_path: Path, capsys: pytest.CaptureFixture, text: str, *sets: str,
            lines: int = 1) -> list[str]:
    """Run `text` with `--set` items; assert exit 2, `lines` error lines, nothing written."""
    cfg = write(tmp_path, text)
    out = tmp_path / "out"
    argv = ["run", str(cfg), "--out", str(out), "--no-progress"]
    for s in sets:
        argv += ["--set", s]
    code, stdout, err = cli(capsys, *argv)
    assert code == 2, (stdout, err)
    assert len(err) == lines, err
    assert all(e.startswith("kmemsim: error: ") for e in err), err
    assert not any("Traceback" in e for e in err)
    assert not out.exists() and not list(tmp_path.glob(".out*")), "something was written"
    return err


# --- workload CPUs beyond the machine ------------------------------------------------------

def test_workload_cpu_beyond_the_machine(tmp_path, capsys):
    err = bad_run(tmp_path, capsys, GOOD.replace('caches = ["buf_512"]',
                                                 'caches = ["buf_512"]\ncpus = [0, 99]'))
    assert "exp.toml: workloads[0].cpus: CPU 99 is beyond the machine (2 CPUs: 0-1)" in err[0]


def test_set_shrinking_the_machine_below_the_workloads_cpus(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = cli(capsys, "run", "experiments/configs/demo.toml", "--out", str(out),
                       "--set", "machine.cpus_per_node=4")
    assert code == 2 and not out.exists()
    # demo.toml's workloads 0 and 2 run on CPUs up to 9 and 14-15: both are named
    assert len(err) == 2
    assert "workloads[0].cpus: CPU 4 is beyond the machine (4 CPUs: 0-3)" in err[0]
    assert "workloads[2].cpus: CPU 14 is beyond the machine" in err[1]


def test_sweep_point_beyond_the_machine_records_the_rule_not_an_index_error(tmp_path):
    path = write(tmp_path, GOOD.replace('caches = ["buf_512"]', 'caches = ["buf_512"]\n'
                                        'cpus = [0, 1]') + "\n[sweep]\ncpus = [2, 1, 4]\n")
    df = sweep_mod.run_sweep(path, tmp_path / "sw", jobs=1, progress=False)
    assert len(df) == 3
    row = df[df["machine.cpus_per_node"] == 1].iloc[0]
    assert row.status == "error"
    assert "workloads[0].cpus: CPU 1 is beyond the machine (1 CPU: 0-0)" in row.error
    assert "IndexError" not in row.error and "ConfigError" not in row.error
    assert set(df[df["machine.cpus_per_node"] != 1].status) == {"ok"}


# --- --out ----------------------------------------------------------------------------------

def test_out_below_a_file(tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    code, _, err = cli(capsys, "run", str(write(tmp_path, GOOD)), "--out",
                       str(tmp_path / "a_file" / "sub"))
    assert code == 2 and len(err) == 1
    assert err[0] == f"kmemsim: error: --out {tmp_path}/a_file/sub: {tmp_path}/a_file is not " \
                     "a directory"


def test_out_not_writable(tmp_path, capsys, monkeypatch):
    import experiments.output as output
    monkeypatch.setattr(output.os, "access", lambda *_a, **_k: False)
    code, _, err = cli(capsys, "run", str(write(tmp_path, GOOD)), "--out", str(tmp_path / "o"))
    assert code == 2 and len(err) == 1
    assert err[0] == f"kmemsim: error: --out {tmp_path}/o: {tmp_path} is not writable"
    assert not (tmp_path / "o").exists()


def test_out_on_a_read_only_file_system(tmp_path, capsys, monkeypatch):
    real = Path.mkdir

    def erofs(self, *a, **k):  # noqa: ANN001, ANN202
        if self.name.endswith(".partial"):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", erofs)
    code, _, err = cli(capsys, "run", str(write(tmp_path, GOOD)), "--out", str(tmp_path / "o"))
    assert code == 2 and len(err) == 1
    assert err[0] == f"kmemsim: error: --out {tmp_path}/o: cannot write: Read-only file system"


# --- compare --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def one_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("one")
    out = tmp / "run"
    assert main(["run", str(write(tmp, GOOD)), "--out", str(out), "--no-progress"]) == 0
    return out


def test_compare_out_is_an_existing_file(one_run, tmp_path, capsys):
    target = tmp_path / "f"
    target.write_text("keep me")
    code, _, err = cli(capsys, "compare", str(one_run), "--out", str(target))
    assert code == 2 and err == [f"kmemsim: error: --out {target}: exists and is not a directory"]
    assert target.read_text() == "keep me"


def test_compare_on_a_corrupt_summary(one_run, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(one_run, bad)
    (bad / "summary.json").write_text("{x")
    code, _, err = cli(capsys, "compare", str(bad), "--out", str(tmp_path / "cmp"))
    assert code == 2 and len(err) == 1
    assert err[0] == f"kmemsim: error: {bad}/summary.json: corrupt (invalid JSON at line 1 " \
                     "column 2: Expecting property name enclosed in double quotes)"
    assert not (tmp_path / "cmp").exists()


def test_compare_on_an_interrupted_sweep_compares_its_finished_points(tmp_path, capsys):
    path = write(tmp_path, GOOD + '\n[sweep]\npolicy = ["global_lock", "spl", "linux_slab"]\n')
    sw = tmp_path / "sw"
    sweep_mod.run_sweep(path, sw, jobs=1, progress=False)
    (sw / "results.parquet").unlink()  # as if cut off before the table was written
    points = sorted(p for p in (sw / "points").iterdir())
    shutil.rmtree(points[0])
    code, _, err = cli(capsys, "compare", str(sw), "--out", str(tmp_path / "cmp"))
    assert code == 0, err
    assert err == [f"kmemsim: note: {sw}: interrupted sweep: comparing its 2 finished points; "
                   "1 of 3 points missing (rerun `kmemsim sweep` to finish it)"]
    runs = json.dumps(sorted(p.name for p in (tmp_path / "cmp").iterdir()))
    assert "report.html" in runs


# --- bench ----------------------------------------------------------------------------------

def test_bench_unknown_policy(tmp_path, capsys):
    out = tmp_path / "b.json"
    code, stdout, err = cli(capsys, "bench", "--policy", "nope", "--json", str(out))
    assert code == 2 and stdout == ""
    assert len(err) == 1
    assert err[0].startswith("kmemsim: error: --policy nope: unknown policy (known: ")
    assert "spl" in err[0] and "global_lock" in err[0]
    assert not out.exists()


# --- several problems; --set named ----------------------------------------------------------

def test_unknown_key_and_missing_duration_are_both_named(tmp_path, capsys):
    err = bad_run(tmp_path, capsys, GOOD.replace('duration = "2ms"\n', "duraton = 2\n"),
                  lines=2)
    assert any(e.endswith("exp.toml: duration: required key is missing") for e in err)
    assert any(e.endswith("exp.toml: duraton: unknown key") for e in err)


def test_several_problems_one_line_each(tmp_path, capsys):
    text = (GOOD.replace("cpus_per_node = 2", "cpus_per_node = true")
            .replace("size = 512", 'size = "4 KB"')
            .replace('size = "256MiB"', 'size = "256MiB"\nbogus = 1')
            .replace("live_objects = 16", "live_objects = -1"))
    err = bad_run(tmp_path, capsys, text, "costs.nonsense=3", lines=5)
    keys = [e.split(": ")[3] for e in err if "--set" not in e]
    assert sorted(keys) == ["caches[0].size", "machine.cpus_per_node", "memory.bogus",
                            "workloads[0].live_objects"]
    assert "kmemsim: error: --set costs.nonsense: unknown cost (see `kmemsim costs`)" in err


def test_sweep_axis_of_a_tunable_no_policy_has(tmp_path, capsys):
    path = write(tmp_path, GOOD + '\n[sweep.set]\n"policy.tunables.nonexistent" = [1, 2]\n')
    code, _, err = cli(capsys, "sweep", str(path), "--out", str(tmp_path / "sw"))
    assert code == 2 and len(err) == 1
    assert err[0] == (f"kmemsim: error: {path}: sweep.set.policy.tunables.nonexistent: no "
                      "policy of the sweep (global_lock) has the tunable 'nonexistent' (see "
                      "`kmemsim policies`)")
    assert not (tmp_path / "sw").exists()


def test_set_of_an_unknown_key_names_set(tmp_path, capsys):
    err = bad_run(tmp_path, capsys, GOOD, "machine.cpu_count=4")
    assert err == ["kmemsim: error: --set machine.cpu_count: unknown key"]


def test_set_of_a_bad_value_names_set(tmp_path, capsys):
    err = bad_run(tmp_path, capsys, GOOD, "machine.hz=2.5")
    assert err == ["kmemsim: error: --set machine.hz: expected an integer, got 2.5"]


# --- the silent cases -----------------------------------------------------------------------

def test_kb_is_ambiguous(tmp_path, capsys):
    err = bad_run(tmp_path, capsys, GOOD.replace("size = 512", 'size = "4 KB"'))
    assert err[0].endswith("exp.toml: caches[0].size: KB is ambiguous: use KiB (1024) or kB "
                           "(1000)")


def test_booleans_are_not_integers(tmp_path, capsys):
    err = bad_run(tmp_path, capsys, GOOD.replace("cpus_per_node = 2", "cpus_per_node = true"))
    assert err[0].endswith("machine.cpus_per_node: expected an integer, got true (booleans are "
                           "not numbers)")


def test_watermark_low_below_min(tmp_path, capsys):
    err = bad_run(tmp_path, capsys, GOOD.replace('size = "256MiB"', 'size = "256MiB"\n'
                                                 "watermark_min = 0.5\nwatermark_low = 0.1\n"
                                                 "watermark_high = 0.6"))
    assert err[0].endswith("memory.watermark_low: watermark_low must be >= watermark_min "
                           "(low 0.1, min 0.5)")


def test_fail_window_ending_before_it_starts(tmp_path, capsys):
    err = bad_run(tmp_path, capsys, GOOD.replace('size = "256MiB"', 'size = "256MiB"\n'
                                                 "[[memory.fail_windows]]\nstart = \"10ms\"\n"
                                                 "end = \"5ms\""))
    assert err[0].endswith("memory.fail_windows[0].end: must be after start (empty interval: "
                           "start 10000000 ns, end 5000000 ns)")


def test_workload_stopping_before_it_starts(tmp_path, capsys):
    err = bad_run(tmp_path, capsys, GOOD + 'start = "1ms"\nstop = "500us"\n')
    assert err[0].endswith("workloads[0].stop: must be after start (empty interval: start "
                           "1000000 ns, stop 500000 ns)")


# --- trace files ----------------------------------------------------------------------------

TRACE = GOOD.split("[[caches]]")[0] + '[[workloads]]\nkind = "trace"\nfile = "{file}"\n'


def test_trace_file_is_a_directory(tmp_path, capsys):
    (tmp_path / "tr").mkdir()
    err = bad_run(tmp_path, capsys, TRACE.format(file="tr"))
    assert err == [f"kmemsim: error: {tmp_path}/tr: is a directory, not a trace file"]


def test_trace_csv_with_a_mistyped_header(tmp_path, capsys):
    (tmp_path / "t.csv").write_text("time_ns,cpu,op,cache,sise,object\n0,0,alloc,a,64,p1\n")
    err = bad_run(tmp_path, capsys, TRACE.format(file="t.csv"))
    assert err == [f"kmemsim: error: {tmp_path}/t.csv:1: expected the header "
                   "time_ns,cpu,op,cache,size,object (unknown column 'sise'; missing size)"]
    (tmp_path / "t.csv").write_text("tme_ns,cpu,op,cache,size,object\n0,0,alloc,a,64,p1\n")
    err = bad_run(tmp_path, capsys, TRACE.format(file="t.csv"))
    assert "unknown column 'tme_ns'; missing time_ns" in err[0]


def test_trace_csv_with_only_a_header(tmp_path, capsys):
    (tmp_path / "t.csv").write_text("time_ns,cpu,op,cache,size,object\n")
    err = bad_run(tmp_path, capsys, TRACE.format(file="t.csv"))
    assert err == [f"kmemsim: error: {tmp_path}/t.csv:1: no events after the header"]


# --- no class names, values shown -----------------------------------------------------------

def test_machine_is_not_a_table(tmp_path, capsys):
    text = GOOD.replace("[machine]\ncpus_per_node = 2\n", "").replace('duration = "2ms"',
                                                                      'duration = "2ms"\n'
                                                                      "machine = 5")
    err = bad_run(tmp_path, capsys, text)
    assert err[0].endswith("exp.toml: machine: expected a table, got 5")
    assert "Section" not in err[0] and "instance" not in err[0]


def test_hz_not_an_integer(tmp_path, capsys):
    err = bad_run(tmp_path, capsys, GOOD.replace("cpus_per_node = 2",
                                                 "cpus_per_node = 2\nhz = 2.5"))
    assert err[0].endswith("exp.toml: machine.hz: expected an integer, got 2.5")


def test_run_on_a_scenario_file(tmp_path, capsys):
    path = "experiments/configs/scenarios/reclaim-deadlock.toml"
    code, _, err = cli(capsys, "run", path, "--out", str(tmp_path / "o"))
    assert code == 2
    assert err == [f"kmemsim: error: {path}: scenario: this is a scenario file; run it with "
                   f"`kmemsim scenario {path}`"]


def test_no_space_left_while_the_run_is_written(tmp_path, capsys, monkeypatch):
    import experiments.output as output
    real = output.RunFolder._commit

    def full(self, tmp, final):  # noqa: ANN001, ANN202
        if final.name == "timeline.parquet":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, tmp, final)

    monkeypatch.setattr(output.RunFolder, "_commit", full)
    out = tmp_path / "o"
    code, _, err = cli(capsys, "run", str(write(tmp_path, GOOD)), "--out", str(out))
    assert code == 2
    assert err == [f"kmemsim: error: {out}/timeline.parquet: cannot write: No space left on "
                   "device"]
    assert not out.exists() and not list(tmp_path.glob(".o*"))
