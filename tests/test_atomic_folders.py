"""Atomic output folders: a run, a scenario and a sweep point appear whole or not at all. An
interrupt (SIGINT, kill -9, an exception) at any point leaves the previous folder or nothing,
never files of two runs; a rerun replaces the folder whole and leaves no temporary folders."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from test_bad_input import GOOD, cli, write

import experiments.output as output
from experiments import sweep as sweep_mod
from experiments.cli import main
from experiments.load import load_run

REPO = Path(__file__).resolve().parent.parent


def files(folder: Path) -> dict[str, bytes]:
    """Every file of a folder tree by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def leftovers(parent: Path) -> list[str]:
    """Temporary folders a staged write may leave (.X.partial, .X.old)."""
    return sorted(p.name for p in parent.rglob(".*") if p.name.endswith((".partial", ".old")))


FAULT = GOOD.replace('duration = "2ms"', 'duration = "20ms"')
"""Long enough (about a second of wall time) for kills to land inside the run."""


def _refs(tmp: Path, text: str) -> dict[str, dict[str, bytes]]:
    cfg = write(tmp, text)
    out = {}
    for pol in ("global_lock", "solaris"):
        assert main(["run", str(cfg), "--out", str(tmp / pol), "--no-progress",
                     "--set", f"policy.name={pol}"]) == 0
        out[pol] = files(tmp / pol)
    assert set(out["solaris"]) - set(out["global_lock"]) >= {"kmastat.txt", "kstat.txt"}
    return out


@pytest.fixture(scope="module")
def refs(tmp_path_factory) -> dict[str, dict[str, bytes]]:
    """Reference run folders of the same experiment under two policies (global_lock and
    solaris, which writes kmastat.txt and kstat.txt besides the common files)."""
    return _refs(tmp_path_factory.mktemp("refs"), GOOD)


@pytest.fixture(scope="module")
def fault_refs(tmp_path_factory) -> dict[str, dict[str, bytes]]:
    """The same for the longer FAULT experiment."""
    return _refs(tmp_path_factory.mktemp("fault_refs"), FAULT)


def whole(folder: Path, refs: dict[str, dict[str, bytes]]) -> str | None:
    """Which reference `folder` is byte for byte (None: it does not exist); fails on a mix."""
    if not folder.exists():
        return None
    got = files(folder)
    for name, ref in refs.items():
        if got == ref:
            return name
    raise AssertionError(f"{folder} holds files of two runs or a partial run: {sorted(got)}")


def test_rerun_into_a_folder_of_another_policy_replaces_it_whole(tmp_path, refs):
    cfg = write(tmp_path, GOOD)
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "--set", "policy.name=solaris"]) == 0
    assert whole(out, refs) == "solaris"
    assert main(["run", str(cfg), "--out", str(out), "--set", "policy.name=global_lock"]) == 0
    assert whole(out, refs) == "global_lock"  # no kmastat.txt / kstat.txt left behind
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("existing", [False, True], ids=["new folder", "existing folder"])
def test_interrupt_at_every_file_write_leaves_the_previous_folder(tmp_path, refs, capsys,
                                                                  monkeypatch, existing):
    cfg = write(tmp_path, GOOD)
    out = tmp_path / "run"
    if existing:
        assert main(["run", str(cfg), "--out", str(out), "--set", "policy.name=global_lock"]) \
            == 0
    before = whole(out, refs)
    real = output.RunFolder._commit
    n_files = len(refs["solaris"])
    for k in range(n_files + 1):
        seen = {"n": 0}

        def interrupting(self, tmp, final, k=k, seen=seen):  # noqa: ANN001, ANN202
            if seen["n"] == k:
                raise KeyboardInterrupt  # SIGINT while the k-th file is written
            seen["n"] += 1
            return real(self, tmp, final)

        monkeypatch.setattr(output.RunFolder, "_commit", interrupting)
        code = main(["run", str(cfg), "--out", str(out), "--no-progress",
                     "--set", "policy.name=solaris"])
        monkeypatch.setattr(output.RunFolder, "_commit", real)
        if k < n_files:
            assert code == 130
            assert whole(out, refs) == before, k
        else:
            assert code == 0 and whole(out, refs) == "solaris"
        assert leftovers(tmp_path) == []
    assert "interrupted" in capsys.readouterr().err


def test_crash_between_the_two_renames_leaves_nothing_then_a_rerun_cleans_up(tmp_path, refs,
                                                                             monkeypatch):
    cfg = write(tmp_path, GOOD)
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "--set", "policy.name=global_lock"]) == 0
    real = os.replace
    calls = {"n": 0}

    def dying(src, dst):  # noqa: ANN001, ANN202
        if Path(src).name.endswith(".partial"):
            raise KeyboardInterrupt  # the old folder is already moved aside
        calls["n"] += 1
        return real(src, dst)

    monkeypatch.setattr(output.os, "replace", dying)
    with pytest.raises(KeyboardInterrupt):
        from experiments.config import load_experiment
        from experiments.run import run_experiment
        run_experiment(load_experiment(cfg, ["policy.name=solaris"]), out)
    monkeypatch.setattr(output.os, "replace", real)
    assert not out.exists()  # the previous folder or nothing: here nothing
    with pytest.raises(FileNotFoundError):
        load_run(out)
    assert main(["run", str(cfg), "--out", str(out), "--set", "policy.name=solaris"]) == 0
    assert whole(out, refs) == "solaris" and leftovers(tmp_path) == []


def _cli(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "experiments.cli", *argv], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill_at(proc: subprocess.Popen, delay: float, sig: int, after: Path | None = None) -> None:
    """Send `sig` `delay` seconds after `after` appears (or after the start)."""
    if after is not None:
        deadline = time.monotonic() + 60
        while not after.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(sig)
    proc.wait(timeout=60)


def _fault_run(tmp_path: Path, refs: dict[str, dict[str, bytes]], kills: int) -> None:
    cfg = write(tmp_path, FAULT)
    out = tmp_path / "run"
    rng = random.Random(20)
    for i in range(kills):
        pol = ("solaris", "global_lock")[i % 2]
        sig = (signal.SIGKILL, signal.SIGINT)[(i // 2) % 2]
        proc = _cli("run", str(cfg), "--out", str(out), "--no-progress",
                    "--set", f"policy.name={pol}")
        # every other kill lands while the run's staging folder exists (inside the run or
        # while its files are written), the others at any moment
        inside = output.staging_path(out) if i % 4 < 2 else None
        _kill_at(proc, rng.uniform(0.0, 1.5) if inside else rng.uniform(0.3, 4.0), sig, inside)
        whole(out, refs)  # never a mix, whatever the moment of the kill
        if out.exists():
            load_run(out)
    proc = _cli("run", str(cfg), "--out", str(out), "--no-progress")
    assert proc.wait(timeout=120) == 0
    assert whole(out, refs) == "global_lock" and leftovers(tmp_path) == []


def test_kill_run_at_random_points(tmp_path, fault_refs):
    _fault_run(tmp_path, fault_refs, kills=3)


@pytest.mark.slow
def test_kill_run_at_many_random_points(tmp_path, fault_refs):
    _fault_run(tmp_path, fault_refs, kills=20)


SWEEP = GOOD + '\n[sweep]\npolicy = ["global_lock", "spl", "solaris", "linux_slab"]\n'


def _fault_sweep(tmp_path: Path, kills: int) -> None:
    path = write(tmp_path, SWEEP)
    ref = tmp_path / "ref"
    sweep_mod.run_sweep(path, ref, jobs=1, progress=False)
    ref_points = {p.name: files(p) for p in (ref / "points").iterdir()}
    out = tmp_path / "sw"
    rng = random.Random(4)
    for i in range(kills):
        sig = (signal.SIGKILL, signal.SIGINT)[i % 2]
        proc = _cli("sweep", str(path), "--out", str(out), "--jobs", "1", "--no-progress")
        _kill_at(proc, rng.uniform(0.0, 2.5), sig, out / "sweep.json")
        for p in (out / "points").iterdir() if (out / "points").exists() else []:
            if p.name.startswith("."):
                continue  # a point being built when the sweep died; the rerun removes it
            assert files(p) == ref_points[p.name], p  # a finished point is whole
            load_run(p)
    proc = _cli("sweep", str(path), "--out", str(out), "--jobs", "1", "--no-progress")
    assert proc.wait(timeout=300) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"),
                                  pd.read_parquet(ref / "results.parquet"))
    assert {p.name: files(p) for p in (out / "points").iterdir()} == ref_points
    assert leftovers(out) == []
    shutil.rmtree(out)


def test_kill_sweep_at_random_points_then_resume(tmp_path):
    _fault_sweep(tmp_path, kills=3)


@pytest.mark.slow
def test_kill_sweep_at_many_random_points_then_resume(tmp_path):
    _fault_sweep(tmp_path, kills=12)


def test_a_folder_that_is_not_kmemsim_output_is_never_replaced(tmp_path, capsys):
    cfg = write(tmp_path, GOOD)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    for out in (mine, tmp_path):  # a user's folder, and the folder holding the experiment
        code, _, err = cli(capsys, "run", str(cfg), "--out", str(out))
        assert code == 2 and len(err) == 1
        assert err[0].endswith("exists and is not a kmemsim output folder (it would be "
                               "replaced whole); choose another folder")
    assert (mine / "notes.txt").read_text() == "precious" and cfg.exists()
    assert leftovers(tmp_path) == []


def test_an_internal_error_replaces_the_folder_with_its_error_report(tmp_path, monkeypatch):
    import experiments.run as run_mod
    cfg = write(tmp_path, GOOD)
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "--set", "policy.name=solaris"]) == 0

    def broken(sim, progress):  # noqa: ANN001, ANN202
        raise RuntimeError("a bug in the model")

    monkeypatch.setattr(run_mod, "_run_loop", broken)
    with pytest.raises(RuntimeError):
        main(["run", str(cfg), "--out", str(out), "--set", "policy.name=global_lock"])
    names = sorted(p.name for p in out.iterdir())
    assert names == ["config.toml", "error.txt", "summary.json"]  # nothing of the solaris run
    assert "a bug in the model" in (out / "error.txt").read_text()
    assert '"status": "error"' in (out / "summary.json").read_text()
    with pytest.raises(FileNotFoundError):
        load_run(out)
    assert leftovers(tmp_path) == []
