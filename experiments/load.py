"""Load runs and sweeps into pandas, for notebooks and for `kmemsim compare`.

    from experiments.load import load_run, load_sweep
    run = load_run("results/quickstart")          # one run folder
    run.timeline.plot(x="time_ns", y="cpu.ops")
    table = load_sweep("results/demo/sweep")       # one row per sweep point
    runs = load_sweep("results/demo/sweep", runs=True)  # (table, {point id: Run})
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from simcore.units import plural

REPORT_FILES = ("spl_slab.txt", "kmastat.txt", "kmem_slabs.txt", "kstat.txt", "slabinfo.txt",
                "lock_stat.txt", "deadlock.txt")
"""Text reports a run folder may hold, in the order reports show them (any other *.txt a
policy writes follows, by name; error.txt is not a report)."""


HEADLINE = ["allocs", "frees", "alloc_failures", "end_ns", "ops_per_sim_s", "alloc_mean_ns",
            "alloc_p99_ns", "free_mean_ns", "lock_contentions", "lock_wait_ns",
            "irq_off_share", "irq_off_max_ns", "bytes_total_peak", "frag_external_end",
            "emergency_max"]
"""The headline figures of a run (`Run.headline`): sweep tables and comparisons carry them."""


@dataclass
class Run:
    """One run folder: its summary and its tables."""

    path: Path
    summary: dict[str, Any]
    timeline: pd.DataFrame
    events: pd.DataFrame
    histograms: pd.DataFrame
    reports: dict[str, str] = field(default_factory=dict)
    label: str = ""

    @property
    def policy(self) -> str:
        return str(self.summary["policy"])

    @property
    def cpus(self) -> int:
        return int(self.summary["machine"]["cpus"])

    @property
    def ops_per_sim_second(self) -> float:
        """Allocations plus frees per second of simulated time."""
        ops = self.summary["ops"]
        end = self.summary["end_ns"]
        return (ops["allocs"] + ops["frees"]) * 1e9 / end if end else 0.0

    @property
    def headline(self) -> dict[str, Any]:
        """The HEADLINE figures: operation counts and rate, latency, lock totals, IRQ-off,
        peak memory held by the caches, final external fragmentation, most emergency objects."""
        s = self.summary
        lat = s["latency"]
        total_cols = [c for c in self.timeline.columns
                      if c.startswith("cache.") and c.endswith(".bytes_total")]
        caches = s.get("caches", {})
        objs = sum(c.get("objs_free", 0) + c.get("objs_cached", 0) + c.get("objs_inuse", 0)
                   for c in caches.values())
        free = sum(c.get("objs_free", 0) for c in caches.values())
        return {
            "allocs": s["ops"]["allocs"], "frees": s["ops"]["frees"],
            "alloc_failures": s["ops"]["alloc_failures"], "end_ns": s["end_ns"],
            "ops_per_sim_s": self.ops_per_sim_second,
            "alloc_mean_ns": lat.get("latency.alloc", {}).get("mean", 0.0),
            "alloc_p99_ns": lat.get("latency.alloc", {}).get("p99", 0.0),
            "free_mean_ns": lat.get("latency.free", {}).get("mean", 0.0),
            "lock_contentions": sum(v["contentions"] for v in s["locks"].values()),
            "lock_wait_ns": sum(v["waittime_total_ns"] for v in s["locks"].values()),
            "irq_off_share": s["cpu"]["irq_off_share"],
            "irq_off_max_ns": s["cpu"]["irq_off_max_ns"],
            "bytes_total_peak": float(self.timeline[total_cols].sum(axis=1).max())
            if total_cols else 0.0,
            "frag_external_end": free / objs if objs else 0.0,
            "emergency_max": max((int(c.get("skc_obj_emergency_max", 0))
                                  for c in caches.values()), default=0),
        }

    def histogram(self, name: str) -> pd.DataFrame:
        """Buckets of one latency histogram (lo_ns, hi_ns, count)."""
        return self.histograms[self.histograms.histogram == name]


class RunFolderError(ValueError):
    """A run or sweep folder whose files cannot be read (corrupt, truncated, foreign)."""


RUN_FILES = ("summary.json", "timeline.parquet", "events.parquet", "histograms.parquet")
"""Files every finished run folder has."""


def is_run(path: str | Path) -> bool:
    return (Path(path) / "summary.json").exists() and (Path(path) / "timeline.parquet").exists()


def is_sweep(path: str | Path) -> bool:
    """A sweep folder: finished (results.parquet) or interrupted (sweep.json or points/)."""
    p = Path(path)
    return (p / "results.parquet").exists() or (p / "sweep.json").exists() or \
        (p / "points").is_dir()


def sweep_progress(path: str | Path) -> tuple[int, int]:
    """(finished points, points of the grid) of a sweep folder; (0, 0) if it is none."""
    p = Path(path)
    if not is_sweep(p):
        return 0, 0
    done = len(_finished_rows(p))
    try:
        total = len(json.loads((p / "sweep.json").read_text())["points"])
    except (OSError, ValueError, KeyError, TypeError):
        total = done
    return done, max(done, total)


def _finished_rows(p: Path) -> list[dict[str, Any]]:
    rows = []
    points = p / "points"
    for f in sorted(points.glob("*/point.json")) if points.is_dir() else []:
        if f.parent.name.startswith("."):
            continue
        try:
            row = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(row, dict):
            row.pop("base", None)
            rows.append(row)
    return rows


def load_run(path: str | Path, label: str = "") -> Run:
    """A run folder written by `kmemsim run` (or a sweep point); RunFolderError naming the
    file if one is missing or corrupt."""
    p = Path(path)
    if not is_run(p):
        raise FileNotFoundError(f"{p}: not a run folder (no summary.json / timeline.parquet)")
    try:
        summary = json.loads((p / "summary.json").read_text())
        label = label or f"{summary['policy']} {plural(summary['machine']['cpus'], 'CPU')}"
    except json.JSONDecodeError as exc:
        raise RunFolderError(f"{p / 'summary.json'}: corrupt (invalid JSON at line {exc.lineno}"
                             f" column {exc.colno}: {exc.msg})") from None
    except (KeyError, TypeError) as exc:
        raise RunFolderError(f"{p / 'summary.json'}: not a kmemsim summary (no {exc})") \
            from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"{p / 'summary.json'}: cannot be read ({exc})") from None
    tables = {}
    for name in RUN_FILES[1:]:
        try:
            tables[name] = pd.read_parquet(p / name)
        except Exception as exc:  # pyarrow raises many kinds for a truncated file
            raise RunFolderError(f"{p / name}: cannot be read ({str(exc).splitlines()[0]})") \
                from None
    others = sorted(f.name for f in p.glob("*.txt") if f.name not in (*REPORT_FILES, "error.txt"))
    reports = {name: (p / name).read_text(errors="replace") for name in (*REPORT_FILES, *others)
               if (p / name).exists()}
    return Run(p, summary, tables["timeline.parquet"], tables["events.parquet"],
               tables["histograms.parquet"], reports, label)


def load_sweep(path: str | Path, runs: bool = False) -> Any:
    """The results table of a sweep folder; with `runs`, also its points' runs by id. An
    interrupted sweep (no results.parquet yet) gives the rows of its finished points."""
    p = Path(path)
    if not is_sweep(p):
        raise FileNotFoundError(f"{p}: not a sweep folder (no results.parquet)")
    if (p / "results.parquet").exists():
        try:
            table = pd.read_parquet(p / "results.parquet")
        except Exception as exc:
            raise RunFolderError(f"{p / 'results.parquet'}: cannot be read "
                                 f"({str(exc).splitlines()[0]})") from None
    else:
        table = pd.DataFrame(sorted(_finished_rows(p), key=lambda r: r["point"]))
        if table.empty:
            raise FileNotFoundError(f"{p}: interrupted sweep with no finished point")
    if not runs:
        return table
    out = {}
    for row in table.itertuples():
        folder = p / "points" / str(row.point)
        if row.status in ("ok", "deadlock") and is_run(folder):
            run = load_run(folder)
            extra = [w for w in str(row.label).split()
                     if w != run.policy and not w.startswith("cpus=")]
            if extra:
                run.label += " " + " ".join(extra)
            out[row.point] = run
    return table, out
