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


def is_run(path: str | Path) -> bool:
    return (Path(path) / "summary.json").exists() and (Path(path) / "timeline.parquet").exists()


def is_sweep(path: str | Path) -> bool:
    return (Path(path) / "results.parquet").exists()


def load_run(path: str | Path, label: str = "") -> Run:
    """A run folder written by `kmemsim run` (or a sweep point)."""
    p = Path(path)
    if not is_run(p):
        raise FileNotFoundError(f"{p}: not a run folder (no summary.json / timeline.parquet)")
    summary = json.loads((p / "summary.json").read_text())
    others = sorted(f.name for f in p.glob("*.txt") if f.name not in (*REPORT_FILES, "error.txt"))
    reports = {name: (p / name).read_text() for name in (*REPORT_FILES, *others)
               if (p / name).exists()}
    return Run(p, summary, pd.read_parquet(p / "timeline.parquet"),
               pd.read_parquet(p / "events.parquet"), pd.read_parquet(p / "histograms.parquet"),
               reports, label or f"{summary['policy']} {summary['machine']['cpus']} CPUs")


def load_sweep(path: str | Path, runs: bool = False) -> Any:
    """The results table of a sweep folder; with `runs`, also its points' runs by id."""
    p = Path(path)
    if not is_sweep(p):
        raise FileNotFoundError(f"{p}: not a sweep folder (no results.parquet)")
    table = pd.read_parquet(p / "results.parquet")
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
