"""Facts of the SLUB scenarios (sheaves-vs-magazines, slub-cpu-partial): lock wait per design,
memory held, what stays in cpu partial slabs, sheaf and barn counters (merged into
`experiments.scenarios.FACTS` as `SLUB_FACTS`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from experiments.scenario_data import cache_sum, cache_total


def _lock_wait(vr: Any, suffix: str) -> int:
    return sum(int(v["waittime_total_ns"]) for k, v in vr.result.summary.get("locks", {}).items()
               if k.endswith(suffix))


def fact_list_lock_wait(vr: Any) -> int:
    """Total time spent spinning for SLAB / SLUB list_locks, ns (lock_stat waittime-total)."""
    return _lock_wait(vr, "list_lock")


def fact_depot_wait(vr: Any) -> int:
    """Total time spent waiting for Solaris depot locks (<cache>->cache_depot_lock), ns."""
    return _lock_wait(vr, "cache_depot_lock")


def fact_barn_wait(vr: Any) -> int:
    """Total time spent spinning for SLUB barn locks (6.18 sheaves), ns."""
    return _lock_wait(vr, "barn_lock")


def fact_bytes_total_end(vr: Any) -> int:
    """Memory held by the caches at the end (slabs, emergency objects, metadata), bytes."""
    return cache_sum(vr, "bytes_total")


def fact_bytes_total_peak(vr: Any) -> int:
    """Most memory the caches held at once (timeline samples), bytes."""
    return int(cache_total(vr, ".bytes_total").max() or 0)


def fact_cpu_partial_slabs_end(vr: Any) -> int:
    """SLUB: slabs left on cpu partial lists at the end."""
    return cache_sum(vr, "cpu_partial_slabs")


def fact_cpu_partial_bytes_end(vr: Any) -> int:
    """SLUB: memory of the slabs left on cpu partial lists at the end, bytes."""
    return cache_sum(vr, "cpu_partial_bytes")


def fact_cpu_partial_free_objs_end(vr: Any) -> int:
    """SLUB: free objects pinned in cpu partial slabs at the end."""
    return cache_sum(vr, "cpu_partial_free_objs")


def fact_cpu_partial_drains(vr: Any) -> int:
    """SLUB: cpu partial lists drained to the node lists by put_cpu_partial."""
    return cache_sum(vr, "cpu_partial_drain")


def fact_barn_put_fail(vr: Any) -> int:
    """SLUB sheaves: full sheaves the barn refused (over MAX_FULL_SHEAVES)."""
    return cache_sum(vr, "barn_put_fail")


def fact_barn_get(vr: Any) -> int:
    """SLUB sheaves: full sheaves taken from the barn."""
    return cache_sum(vr, "barn_get")


def fact_alloc_cpu_sheaf(vr: Any) -> int:
    """SLUB sheaves: allocations served by a percpu sheaf."""
    return cache_sum(vr, "alloc_cpu_sheaf")


SLUB_FACTS: dict[str, Callable[[Any], Any]] = {
    "list_lock_wait_ns": fact_list_lock_wait,
    "depot_wait_ns": fact_depot_wait,
    "barn_wait_ns": fact_barn_wait,
    "bytes_total_end": fact_bytes_total_end,
    "bytes_total_peak": fact_bytes_total_peak,
    "cpu_partial_slabs_end": fact_cpu_partial_slabs_end,
    "cpu_partial_bytes_end": fact_cpu_partial_bytes_end,
    "cpu_partial_free_objs_end": fact_cpu_partial_free_objs_end,
    "cpu_partial_drains": fact_cpu_partial_drains,
    "barn_put_fail": fact_barn_put_fail,
    "barn_get": fact_barn_get,
    "alloc_cpu_sheaf": fact_alloc_cpu_sheaf,
}
"""The facts above by name, merged into `experiments.scenarios.FACTS`."""
