"""The command line: bad input gets one line naming the problem and exit 2 with nothing written;
a good run writes the whole run folder, byte-identical for the same config and seed."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from experiment_text import GOOD

from experiments.cli import main


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "exp.toml"
    p.write_text(text)
    return p


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


BAD = [
    # (description, config text or replacement, --set overrides, expected message fragment)
    ("unknown top-level key", GOOD + "\nbogus = 1\n", [], "bogus: unknown key"),
    ("unknown nested key", GOOD.replace("cpus_per_node = 2", "cpus = 2"), [],
     "machine.cpus: unknown key"),
    ("wrong type", GOOD.replace("cpus_per_node = 2", 'cpus_per_node = "two"'), [],
     'machine.cpus_per_node: expected an integer, got "two"'),
    ("bad unit", GOOD.replace('"2ms"', '"2 fortnights"'), [],
     "duration: unknown time unit 'fortnights'"),
    ("zero CPUs", GOOD.replace("cpus_per_node = 2", "cpus_per_node = 0"), [],
     "machine.cpus_per_node: must be > 0, got 0"),
    ("negative size", GOOD.replace("size = 512", "size = -512"), [],
     "caches[0].size: must be > 0, got -512"),
    ("unknown policy", GOOD.replace('"global_lock"', '"slob"'), [],
     "policy.name: unknown policy 'slob'"),
    ("unknown tunable", GOOD + "", ["policy.tunables.no_such=1"],
     "policy.tunables.no_such: unknown tunable for policy 'global_lock'"),
    ("unknown workload", GOOD.replace('kind = "steady"', 'kind = "nope"'), [],
     "workloads[0].kind: unknown workload 'nope'"),
    ("workload names a missing cache", GOOD.replace('caches = ["buf_512"]', 'caches = ["x"]'),
     [], "workloads[0].caches: no cache named 'x'"),
    ("bad workload parameter", GOOD, ["workloads[0].live_objects=-3"],
     "--set workloads[0].live_objects: must be > 0, got -3"),
    ("unknown cost", GOOD + '\n[costs]\nmagic = "1ns"\n', [], "costs.magic: unknown cost"),
    ("invalid TOML", GOOD + "\n[machine\n", [], "invalid TOML"),
    ("missing duration", GOOD.replace('duration = "2ms"\n', ""), [],
     "duration: required key is missing"),
    ("malformed --set", GOOD, ["machine.cpus_per_node"], "expected key.path=value"),
    ("alignment not a power of two", GOOD.replace("size = 512", "size = 512\nalign = 24"), [],
     "caches[0].align: must be a power of two"),
]


@pytest.mark.parametrize("desc,text,sets,fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, capsys, desc, text, sets,
                                                      fragment):
    cfg = write(tmp_path, text)
    out = tmp_path / "out"
    argv = ["run", str(cfg), "--out", str(out), "--no-progress"]
    for s in sets:
        argv += ["--set", s]
    code, stdout, err = run_cli(capsys, *argv)
    assert code == 2, desc
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("kmemsim: error: ")
    assert fragment in lines[0], lines[0]
    assert not out.exists()


def test_missing_file_is_exit_2(tmp_path, capsys):
    code, _, err = run_cli(capsys, "run", str(tmp_path / "nope.toml"), "--out",
                           str(tmp_path / "o"))
    assert code == 2
    assert err.strip() == f"kmemsim: error: {tmp_path / 'nope.toml'}: no such experiment file"
    assert not (tmp_path / "o").exists()


def test_run_writes_the_run_folder(tmp_path, capsys):
    cfg = write(tmp_path, GOOD)
    out = tmp_path / "run"
    code, stdout, _ = run_cli(capsys, "run", str(cfg), "--out", str(out), "--no-progress")
    assert code == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["config.toml", "events.parquet", "histograms.parquet", "lock_stat.txt",
                     "slabinfo.txt", "summary.json", "timeline.parquet"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["invariants"] == "ok"
    assert summary["ops"]["allocs"] > 1000
    assert summary["end_ns"] == 2_000_000
    tl = pd.read_parquet(out / "timeline.parquet")
    assert list(tl["time_ns"][:3]) == [0, 1_000_000, 2_000_000][: len(tl)]
    assert "cache.buf_512.objs_inuse" in tl.columns
    assert "lock.buf_512->lock.contentions" in tl.columns
    assert (out / "lock_stat.txt").read_text().startswith("lock_stat version 0.4\n")
    assert (out / "slabinfo.txt").read_text().startswith("slabinfo - version: 2.1\n")
    assert "simulated alloc+free per wall-second" in stdout


def test_same_config_and_seed_give_byte_identical_run_folders(tmp_path, capsys):
    cfg = write(tmp_path, GOOD)
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_cli(capsys, "run", str(cfg), "--out", str(a), "--no-progress")[0] == 0
    assert run_cli(capsys, "run", str(cfg), "--out", str(b), "--no-progress")[0] == 0
    files = sorted(p.name for p in a.iterdir())
    assert files == sorted(p.name for p in b.iterdir())
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_a_different_seed_changes_the_run(tmp_path, capsys):
    cfg = write(tmp_path, GOOD)
    a, b = tmp_path / "a", tmp_path / "b"
    run_cli(capsys, "run", str(cfg), "--out", str(a), "--no-progress")
    run_cli(capsys, "run", str(cfg), "--out", str(b), "--no-progress", "--seed", "4")
    assert (a / "summary.json").read_bytes() != (b / "summary.json").read_bytes()


def test_set_override_applies(tmp_path, capsys):
    cfg = write(tmp_path, GOOD)
    out = tmp_path / "o"
    code, _, _ = run_cli(capsys, "run", str(cfg), "--out", str(out), "--no-progress",
                         "--set", "machine.cpus_per_node=3")
    assert code == 0
    assert json.loads((out / "summary.json").read_text())["machine"]["cpus"] == 3


def test_policies_lists_tunables_with_defaults(capsys):
    code, out, _ = run_cli(capsys, "policies")
    assert code == 0
    assert "global_lock:" in out and "keep_empty_slabs = 1" in out


def test_help_explains_commands(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    for word in ("run", "policies", "workloads", "exit status"):
        assert word in out


@pytest.mark.parametrize("config", sorted(p.name for p in Path("experiments/configs").glob(
    "*.toml")))
def test_every_shipped_config_runs(tmp_path, config):
    out = tmp_path / "run"
    assert main(["run", f"experiments/configs/{config}", "--out", str(out), "--no-progress",
                 "--set", "duration='1ms'"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["invariants"] == "ok" and s["status"] == "ok"
