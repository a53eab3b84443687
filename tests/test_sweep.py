"""Sweeps: the grid, resuming an interrupted sweep to the same table, a failing point recorded
while the others go on, and the Dask LocalCluster path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from experiments import sweep as sweep_mod
from experiments.cli import main
from experiments.config import ConfigError
from experiments.load import load_sweep

BASE = """\
name = "sw"
seed = 1
duration = "2ms"

[machine]
cpus_per_node = 1

[memory]
size = "256MiB"

[policy]
name = "global_lock"

[[caches]]
name = "buf_512"
size = 512

[[workloads]]
kind = "steady"
caches = ["buf_512"]
live_objects = 8
lifetime = { dist = "exponential", mean = "5us" }
"""

GRID = BASE + """
[sweep]
policy = ["global_lock", "spl"]
cpus = [1, 2]
[sweep.set]
"policy.tunables.spl_kmem_cache_magazine_size" = [0, 8]
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "sweep.toml"
    p.write_text(text)
    return p


def test_grid_skips_tunables_a_policy_does_not_have(tmp_path: Path) -> None:
    path = write(tmp_path, GRID)
    points = sweep_mod.grid(sweep_mod.load_raw(path), path)
    # global_lock has no magazine size: 2 CPU counts; spl: 2 CPU counts x 2 sizes.
    assert len(points) == 6
    assert len({p.id for p in points}) == 6
    gl = [p for p in points if p.as_dict()["policy.name"] == "global_lock"]
    assert all("policy.tunables.spl_kmem_cache_magazine_size" not in p.as_dict() for p in gl)


def test_unknown_sweep_key_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write(tmp_path, BASE + '\n[sweep]\npolicies = ["spl"]\n')
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sweep.policies: unknown sweep key" in err[0]
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="no \\[sweep\\] table"):
        sweep_mod.grid(sweep_mod.load_raw(write(tmp_path, BASE)), tmp_path / "sweep.toml")


def test_interrupted_sweep_resumes_to_the_same_table(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, GRID)
    whole = sweep_mod.run_sweep(path, tmp_path / "whole", jobs=1, progress=False)
    assert list(whole.status) == ["ok"] * 6

    part = tmp_path / "part"
    ran: list[str] = []
    real = sweep_mod.run_point

    def interrupting(raw, p, point, out):  # noqa: ANN001, ANN202
        if len(ran) == 3:
            raise KeyboardInterrupt  # the sweep is cut off after three points
        ran.append(point.id)
        return real(raw, p, point, out)

    monkeypatch.setattr(sweep_mod, "run_point", interrupting)
    with pytest.raises(KeyboardInterrupt):
        sweep_mod.run_sweep(path, part, jobs=1, progress=False)
    assert len(list((part / "points").iterdir())) == 3
    assert not (part / "results.parquet").exists()

    rerun: list[str] = []

    def counting(raw, p, point, out):  # noqa: ANN001, ANN202
        rerun.append(point.id)
        return real(raw, p, point, out)

    monkeypatch.setattr(sweep_mod, "run_point", counting)
    resumed = sweep_mod.run_sweep(path, part, jobs=1, progress=False)
    assert len(rerun) == 3 and not set(rerun) & set(ran)
    pd.testing.assert_frame_equal(resumed, whole)
    pd.testing.assert_frame_equal(load_sweep(part), whole)


def test_failing_point_is_recorded_and_others_go_on(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + """
[sweep]
cpus = [1, 2]
[sweep.set]
"workloads[0].live_objects" = [8, -1, 4]
""")
    df = sweep_mod.run_sweep(path, tmp_path / "out", jobs=2, progress=False)
    assert len(df) == 6
    bad = df[df["workloads[0].live_objects"] == -1]
    assert set(bad.status) == {"error"} and len(bad) == 2
    assert all("live_objects" in e for e in bad.error)
    good = df[df["workloads[0].live_objects"] != -1]
    assert set(good.status) == {"ok"} and (good.allocs > 0).all()


def test_dask_local_cluster_runs_a_small_sweep(tmp_path: Path) -> None:
    pytest.importorskip("dask.distributed")
    path = write(tmp_path, BASE + '\n[sweep]\npolicy = ["global_lock", "spl"]\n')
    df = sweep_mod.run_sweep(path, tmp_path / "dask", dask="local", progress=False)
    local = sweep_mod.run_sweep(path, tmp_path / "local", jobs=1, progress=False)
    assert list(df.status) == ["ok", "ok"]
    pd.testing.assert_frame_equal(df, local)


def test_cli_sweep_writes_table(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + '\n[sweep]\nseed = [1, 2]\n')
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--jobs", "1", "--no-progress"]) == 0
    df = load_sweep(out)
    assert sorted(df.seed) == [1, 2]
    shutil.rmtree(out / "points" / df.point[0])
    assert main(["sweep", str(path), "--out", str(out), "--jobs", "1", "--no-progress"]) == 0
    pd.testing.assert_frame_equal(load_sweep(out), df)
