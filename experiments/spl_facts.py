"""Facts of the SPL scenarios (reap-storm, reclaim-deadlock): the lockup of dc1b302 and the
false DEADLOCKED detections of e2dcc6e's 1-tick wait, computed from a scenario variant's
summary, event log and timeline (see `experiments.scenarios`, which merges `SPL_FACTS` into its
FACTS table)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def _deadlocked_sets(vr: Any) -> list[dict[str, Any]]:
    ev = vr.events
    return [json.loads(d) for d in ev.loc[ev.kind == "deadlocked_set", "detail"]]


def fact_alloc_max_ns(vr: Any) -> int:
    """Longest completed allocation, ns (an allocation still in progress is not counted)."""
    return int(vr.result.summary["latency"]["latency.alloc"]["max"])


def fact_stall_max_ns(vr: Any) -> int:
    """Longest allocator call: the slowest completed allocation or a call still in progress."""
    s = vr.result.summary
    done = int(s["latency"]["latency.alloc"]["max"])
    stuck = max((int(w.get("in_flight_max_ns", 0)) for w in s.get("workloads", [])), default=0)
    return max(done, stuck)


def fact_progress_stall_ns(vr: Any) -> int:
    """Longest time no allocation or free completed on any CPU, ns (sampling resolution)."""
    tl = vr.timeline
    if "cpu.ops" not in tl.columns or len(tl) < 2:
        return 0
    best = run = 0
    prev = int(tl.time_ns.iloc[0])
    for t, ops in zip(tl.time_ns.iloc[1:], tl["cpu.ops"].iloc[1:], strict=True):
        run = run + int(t) - prev if ops == 0 else 0
        best = max(best, run)
        prev = int(t)
    return best


def fact_skc_lock_spin_share(vr: Any) -> float:
    """Share of all CPU time spent spinning for skc_lock (waittime-total / CPUs x run)."""
    s = vr.result.summary
    cpu_time = s["machine"]["cpus"] * s["end_ns"]
    wait = sum(int(v["waittime_total_ns"]) for k, v in s.get("locks", {}).items()
               if k.endswith("skc_lock"))
    return round(wait / cpu_time, 4) if cpu_time else 0.0


def fact_alloc_runnable_max_ns(vr: Any) -> int:
    """Longest time one allocation call was runnable (running or queued) without completing.

    In ns: a slow-path call's time less the time it slept in spl_cache_grow's waits; a call
    still in progress at the end counts too."""
    s = vr.result.summary
    h = s["latency"].get("spl.alloc_runnable")
    done = int(h["max"]) if h and h.get("count") else 0
    stuck = max((int(c.get("alloc_runnable_in_flight_ns", 0)) for c in s["caches"].values()),
                default=0)
    return max(done, stuck)


def _reap_windows(vr: Any) -> list[tuple[int, int]]:
    """(start, end) of every spl_kmem_cache_reap_now that took KMC_BIT_REAPING, ns; a reap
    still running at the end of the run ends there."""
    ev = vr.events
    out: list[tuple[int, int]] = []
    for _cache, grp in ev[ev.kind.isin(["reap_start", "reap"])].groupby("cache"):
        begin = None
        for t, kind in zip(grp.time_ns, grp.kind, strict=True):
            if kind == "reap_start":
                begin = int(t)
            elif begin is not None:
                out.append((begin, int(t)))
                begin = None
        if begin is not None:
            out.append((begin, int(vr.result.summary["end_ns"])))
    return out


def fact_reap_max_ns(vr: Any) -> int:
    """Longest reap: KMC_BIT_REAPING set to cleared, ns."""
    return max((b - a for a, b in _reap_windows(vr)), default=0)


def fact_reap_spin_share(vr: Any) -> float:
    """Share of the CPUs' time spent spinning for skc_lock while a reap held REAPING.

    skc_lock wait time in the timeline intervals that overlap a reap, weighted by the
    overlap, over CPUs x reap time."""
    tl = vr.timeline
    cols = [c for c in tl.columns if c.endswith("skc_lock.waittime_total")]
    windows = _reap_windows(vr)
    if not cols or not windows or len(tl) < 2:
        return 0.0
    times = [int(x) for x in tl.time_ns]
    waits = tl[cols].sum(axis=1).tolist()
    wait = 0.0
    for i in range(1, len(times)):
        lo, hi = times[i - 1], times[i]
        cover = sum(max(0, min(hi, b) - max(lo, a)) for a, b in windows)
        if cover:
            wait += waits[i] * cover / (hi - lo)
    reap_time = sum(b - a for a, b in windows)
    return round(wait / (vr.result.summary["machine"]["cpus"] * reap_time), 4)


def fact_false_deadlocked(vr: Any) -> int:
    """DEADLOCKED detections while the growth was only slow (not in direct reclaim).

    The growth task was queued (not behind workers that are all in direct reclaim) or its
    worker was running (waiting for a CPU or the vmap lock): a false positive."""
    return sum(1 for d in _deadlocked_sets(vr) if d.get("grow") != "reclaim")


def fact_true_deadlocked(vr: Any) -> int:
    """DEADLOCKED detections while growth was stuck in direct reclaim (or queued behind it)."""
    return sum(1 for d in _deadlocked_sets(vr) if d.get("grow") == "reclaim")


SPL_FACTS: dict[str, Callable[[Any], Any]] = {
    "alloc_max_ns": fact_alloc_max_ns,
    "stall_max_ns": fact_stall_max_ns,
    "progress_stall_ns": fact_progress_stall_ns,
    "skc_lock_spin_share": fact_skc_lock_spin_share,
    "alloc_runnable_max_ns": fact_alloc_runnable_max_ns,
    "reap_max_ns": fact_reap_max_ns,
    "reap_spin_share": fact_reap_spin_share,
    "false_deadlocked": fact_false_deadlocked,
    "true_deadlocked": fact_true_deadlocked,
}
"""Figures the SPL scenarios can ask for in `facts`, by name."""
