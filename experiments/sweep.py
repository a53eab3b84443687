"""`kmemsim sweep`: run an experiment over a grid of policies, CPU counts, seeds and any other
keys, in parallel processes or on a Dask cluster, into one results table.

The grid is the experiment file's `[sweep]` table:

    [sweep]
    policy = ["global_lock", "spl", "solaris", "linux_slab"]   # policy.name
    cpus = [1, 4, 16]                                          # machine.cpus_per_node
    seed = [1, 2]
    [sweep.set]                                                # any key path -> its values
    "workloads[0].live_objects" = [16, 64]
    "policy.tunables.spl_kmem_cache_magazine_size" = [0, 16]   # only for policies that have it

Every combination is a point (a `policy.tunables.X` value applies only to policies that have
the tunable X, so such an axis does not repeat the other policies' runs; an axis whose tunable
no policy of the sweep has is bad input), named by a hash of its settings, run into
`<out>/points/<id>/` (a normal run folder plus `point.json`). A point's folder appears only when
its run has finished (it is built in `.<id>.partial` and swapped into place), so an interrupted
sweep resumes where it stopped: finished points of the same base experiment are skipped. A
point that fails records its error and the others go on. `<out>/sweep.json` lists the grid
(written before the first point runs, so an interrupted sweep knows what is missing);
`<out>/results.parquet` has one row per point (the settings and the headline figures), sorted
by point id, and is rewritten atomically after every sweep.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import sys
import traceback
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd

from experiments.config import ConfigError, _set_path, apply_overrides, load_raw, validate
from experiments.load import HEADLINE, load_run
from experiments.output import RunFolder, StagedFolder, check_writable

SWEEP_KEYS = {"policy": "policy.name", "cpus": "machine.cpus_per_node", "seed": "seed",
              "nodes": "machine.nodes", "duration": "duration"}
"""Short sweep keys and the experiment key each sets."""


@dataclass(frozen=True)
class Point:
    """One combination of the grid."""

    id: str
    label: str
    settings: tuple[tuple[str, Any], ...]
    """(experiment key path, value) pairs, in grid order."""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.settings)


def grid(raw: dict[str, Any], path: Path) -> list[Point]:
    """The points of the `[sweep]` table (ConfigError naming a bad key or value)."""
    sw = raw.get("sweep")
    if not isinstance(sw, dict) or not sw:
        raise ConfigError(f"{path}: no [sweep] table (see docs/compare.md)")
    axes: list[tuple[str, list[Any]]] = []
    for key, values in sw.items():
        if key == "set":
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: sweep.set: must be a table of key path = [values]")
            for k, v in values.items():
                axes.append((k, _values(path, f"sweep.set.{k}", v)))
            continue
        if key not in SWEEP_KEYS:
            known = ", ".join(sorted([*SWEEP_KEYS, "set"]))
            raise ConfigError(f"{path}: sweep.{key}: unknown sweep key (known: {known})")
        axes.append((SWEEP_KEYS[key], _values(path, f"sweep.{key}", values)))
    from policies.registry import available

    tunables = {name: {tb.name for tb in cls.tunables} for name, cls in available().items()}
    default_policy = raw.get("policy", {}).get("name") if isinstance(raw.get("policy"),
                                                                     dict) else None
    _check_tunable_axes(path, axes, tunables, default_policy)
    points: dict[str, Point] = {}
    for combo in itertools.product(*(v for _k, v in axes)):
        settings = tuple((k, v) for (k, _vals), v in zip(axes, combo, strict=True))
        settings = _applicable(settings, tunables, default_policy)
        digest = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode())
        label = " ".join(_short(k, v) for k, v in settings)
        point = Point(digest.hexdigest()[:10], label, settings)
        points.setdefault(point.id, point)
    return list(points.values())


def _check_tunable_axes(path: Path, axes: list[tuple[str, list[Any]]],
                        tunables: dict[str, set[str]], default_policy: Any) -> None:
    """A `policy.tunables.X` axis must name a tunable of at least one policy the sweep runs
    (otherwise it would silently vanish from every point)."""
    policies = next((v for k, v in axes if k == "policy.name"), [default_policy])
    lines = []
    for key, _values in axes:
        if not key.startswith("policy.tunables."):
            continue
        name = key.split(".", 2)[2]
        if not any(name in tunables.get(str(p), set()) for p in policies):
            shown = ", ".join(map(str, policies))
            lines.append(f"{path}: sweep.set.{key}: no policy of the sweep ({shown}) has the "
                         f"tunable {name!r} (see `kmemsim policies`)")
    if lines:
        raise ConfigError(lines)


def _applicable(settings: tuple[tuple[str, Any], ...], tunables: dict[str, set[str]],
                default_policy: Any) -> tuple[tuple[str, Any], ...]:
    """`settings` without the `policy.tunables.X` entries the point's policy does not have
    (so a tunable axis does not repeat identical runs of the other policies); `tunables`
    maps each policy to its tunable names."""
    policy = dict(settings).get("policy.name", default_policy)
    known = tunables.get(str(policy), set())
    return tuple((k, v) for k, v in settings
                 if not k.startswith("policy.tunables.") or k.split(".", 2)[2] in known)


def _values(path: Path, key: str, v: Any) -> list[Any]:
    if not isinstance(v, list) or not v:
        raise ConfigError(f"{path}: {key}: expected a non-empty list of values")
    return v


def _short(key: str, value: Any) -> str:
    names = {v: k for k, v in SWEEP_KEYS.items()}
    name = names.get(key, key.rsplit(".", 1)[-1])
    return str(value) if name == "policy" else f"{name}={value}"


def point_experiment(raw: dict[str, Any], path: Path, point: Point) -> Any:
    """The validated experiment of one point."""
    data = copy.deepcopy(raw)
    data.pop("sweep", None)
    for key, value in point.settings:
        _set_path(data, key, value, who=f"{path}: sweep: {key}")
    data["name"] = f"{data.get('name') or path.stem}-{point.id}"
    return validate(data, path)


def base_digest(raw: dict[str, Any]) -> str:
    """Hash of the experiment a sweep varies (its file after --set / --seed, without the
    grid): a finished point is reused only by a sweep of the same base."""
    base = {k: v for k, v in raw.items() if k != "sweep"}
    return hashlib.sha1(json.dumps(base, sort_keys=True, default=str).encode()).hexdigest()[:10]


def run_point(raw: dict[str, Any], path: str, point: Point, out: str) -> dict[str, Any]:
    """Run one point into `<out>/points/<id>` (built in `.<id>.partial`, then swapped in);
    its results row. Never raises for a failing point: the failure is recorded in the row
    and in point.json."""
    from experiments.run import run_experiment

    folder = StagedFolder(Path(out) / "points" / point.id).open()
    row: dict[str, Any] = {"point": point.id, "label": point.label,
                           "settings": json.dumps(point.as_dict(), sort_keys=True, default=str)}
    for key, value in point.settings:
        row[key] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
    try:
        exp = point_experiment(raw, Path(path), point)
        res = run_experiment(exp, folder.path, staged=False)
        row.update(status=res.status, error="", policy=exp.policy.name,
                   cpus=exp.machine.nodes * exp.machine.cpus_per_node, seed=exp.seed)
        row.update(load_run(folder.path).headline)
    except ConfigError as exc:  # the point's failure is data; the sweep goes on
        row.update(status="error", error="; ".join(exc.lines))
    except Exception as exc:
        if not (folder.path / "error.txt").exists():
            folder.write_text("error.txt", traceback.format_exc())
        first = (str(exc).splitlines() or [""])[0]
        row.update(status="error", error=f"internal error ({type(exc).__name__}: {first}); "
                                         f"traceback in points/{point.id}/error.txt")
    except BaseException:
        folder.discard()
        raise
    folder.write_json("point.json", {**row, "base": base_digest(raw)})
    folder.commit()
    return row


def finished(out: Path, point: Point, base: str | None = None) -> dict[str, Any] | None:
    """The row of a point that already ran (of the same `base` experiment, if given), or
    None."""
    f = out / "points" / point.id / "point.json"
    try:
        row = json.loads(f.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(row, dict) or (base is not None and row.pop("base", None) != base):
        return None
    row.pop("base", None)
    return row


def table(rows: Iterable[dict[str, Any]], points: list[Point]) -> pd.DataFrame:
    """The results table: one row per point sorted by id; columns point, label, settings,
    the grid's keys in grid order, status, error, policy, cpus, seed, then HEADLINE."""
    keys = list(dict.fromkeys(k for p in points for k, _v in p.settings))
    cols = ["point", "label", "settings", *keys, "status", "error", "policy", "cpus", "seed",
            *HEADLINE]
    df = pd.DataFrame(sorted(rows, key=lambda r: r["point"]))
    return df.reindex(columns=list(dict.fromkeys(cols)))


def run_sweep(file: str | Path, out: str | Path, jobs: int | None = None,
              dask: str | None = None, progress: bool = True,
              overrides: list[str] | None = None, seed: int | None = None) -> pd.DataFrame:
    """Run every unfinished point of the sweep in `file` (with `--set` `overrides` and the
    base `seed` applied before the grid) into `out`; the results table."""
    path = Path(file)
    raw = load_raw(path)
    keys = apply_overrides(raw, overrides or [])
    if seed is not None:
        if seed < 0:
            raise ConfigError(f"--seed: must be >= 0 (got {seed})")
        raw["seed"] = seed
    points = grid(raw, path)
    for p in points[:1] + points[-1:]:
        # bad input fails here, before anything is written
        data = copy.deepcopy(raw)
        data.pop("sweep", None)
        validate(data, path, keys)
        point_experiment(raw, path, p)
    out = Path(out)
    check_writable(out)
    base = base_digest(raw)
    rows = {}
    todo = []
    for p in points:
        done = finished(out, p, base)
        if done is not None:
            rows[p.id] = done
        else:
            todo.append(p)
    RunFolder(out).write_json("sweep.json", {
        "experiment": str(path), "base": base,
        "points": [{"point": p.id, "label": p.label} for p in points]})
    bar = _bar(len(points), len(rows), progress)
    if todo:
        if dask:
            results = _run_dask(raw, path, todo, out, dask)
        else:
            results = _run_local(raw, path, todo, out, jobs or os.cpu_count() or 1)
        for row in results:
            rows[row["point"]] = row
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    df = table(rows.values(), points)
    RunFolder(out).write_parquet("results.parquet", df)
    return df


def _bar(total: int, done: int, progress: bool) -> Any:
    if not progress or not sys.stderr.isatty():
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=done, unit="point", desc="sweep", file=sys.stderr)


def _run_local(raw: dict[str, Any], path: Path, todo: list[Point], out: Path,
               jobs: int) -> Iterable[dict[str, Any]]:
    if jobs <= 1:
        for p in todo:
            yield run_point(raw, str(path), p, str(out))
        return
    with ProcessPoolExecutor(max_workers=min(jobs, len(todo)),
                             mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(run_point, raw, str(path), p, str(out)) for p in todo]
        for f in as_completed(futures):
            yield f.result()


def _run_dask(raw: dict[str, Any], path: Path, todo: list[Point], out: Path,
              address: str) -> Iterable[dict[str, Any]]:
    from dask.distributed import Client, LocalCluster
    from dask.distributed import as_completed as dask_completed

    cluster = None
    if address == "local":
        cluster = LocalCluster(n_workers=os.cpu_count() or 1, threads_per_worker=1,
                               processes=True, dashboard_address=None)
        client = Client(cluster)
    else:
        client = Client(address)
    try:
        futures = [client.submit(run_point, raw, str(path), p, str(out), pure=False)
                   for p in todo]
        for f in dask_completed(futures):
            yield f.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
