"""Counted loaded/previous-magazine hits (KmemCpuLayer._alloc_hit / _free_hit with cc_lock's
line local) give the statistics the recorded hits give: a trace recorder makes every hit take
the recorded path, and the run's results must not change."""

from __future__ import annotations

from pathlib import Path

from experiments.config import validate
from experiments.run import run_experiment
from simcore.trace import TraceRecorder


def _exp(size: int) -> dict:
    # one cache, so the workload's single-cache loop calls the fast paths; 400 ns lifetimes
    # around 16 live objects make the loaded magazine swap with the previous one (the
    # kmem_cpu_reload hits) and, at 32 KiB, exchange with the depot
    return {
        "name": "hits", "seed": 5, "duration": "2ms",
        "machine": {"cpus_per_node": 4},
        "memory": {"size": "2GiB"},
        "policy": {"name": "solaris"},
        "caches": [{"name": "c", "size": size}],
        "workloads": [{"kind": "steady", "live_objects": 16,
                       "lifetime": {"dist": "exponential", "mean": "400ns"}}],
        "sampling": {"interval": "500us"},
    }


def _summary(size: int, traced: bool) -> dict:
    exp = validate(_exp(size), Path("hits.toml"))
    return run_experiment(exp, None, trace=TraceRecorder() if traced else None).summary


def test_counted_hits_record_what_recorded_hits_record():
    for size in (256, 32768):
        counted = _summary(size, traced=False)
        assert counted["ops"]["allocs"] > 1000
        assert counted == _summary(size, traced=True)
