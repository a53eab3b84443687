"""Array hits counted on the CPU arrays (alloc_fast / free_fast, folded by fold_hits) give the
statistics that recording each hit gives, including across do_tune_cpucache (the old arrays
are retired) and CPU hotplug (a dead CPU's array is freed): a trace recorder sends every hit
down the recorded path, `fast_paths = false` sends every operation down __cache_alloc /
__cache_free, and the run's results must not change. Seed 003 ____cache_alloc and
__cache_free count every local operation as exactly one of allochit / allocmiss and freehit /
freemiss, when it starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.config import validate
from experiments.run import run_experiment
from simcore.trace import TraceRecorder


def _exp(size: int, fast: bool) -> dict:
    # one cache, so the workload's single-cache loop counts the hits; 400 ns lifetimes around
    # 16 live objects keep the arrays busy, with refills and flushes at 32 KiB (limit 8)
    return {
        "name": "hits", "seed": 7, "duration": "4ms",
        "machine": {"cpus_per_node": 4, "fast_paths": fast},
        "memory": {"size": "2GiB"},
        "policy": {"name": "linux_slab", "tunables": {"STATS": True}},
        "caches": [{"name": "c", "size": size}],
        "workloads": [{"kind": "steady", "live_objects": 16,
                       "lifetime": {"dist": "exponential", "mean": "400ns"}}],
        "events": [{"at": "1ms", "cpu_offline": 3},
                   {"at": "2ms", "retune": "c", "limit": 8, "batchcount": 2, "shared": 0},
                   {"at": "3ms", "cpu_online": 3}],
        "sampling": {"interval": "500us"},
    }


def _run(size: int, traced: bool = False, fast: bool = True) -> dict:
    exp = validate(_exp(size, fast), Path("hits.toml"))
    return run_experiment(exp, None, trace=TraceRecorder() if traced else None).summary


@pytest.mark.parametrize("size", [256, 32768])
def test_counted_hits_record_what_recorded_hits_record(size):
    counted = _run(size)
    assert counted["ops"]["allocs"] > 1000
    assert counted == _run(size, traced=True)
    assert counted == _run(size, fast=False)


@pytest.mark.parametrize("size", [256, 32768])
def test_every_operation_is_one_hit_or_one_miss(size):
    summary = _run(size)
    c = summary["caches"]["c"]
    assert c["allocs"] == summary["ops"]["allocs"] and c["frees"] == summary["ops"]["frees"]
    # a miss is counted when the refill or flush starts: at the end each of the 4 threads may
    # be inside one
    assert 0 <= c["allochit"] + c["allocmiss"] - c["allocs"] - c["alloc_fail"] <= 4
    assert 0 <= c["freehit"] + c["freemiss"] - c["frees"] <= 4
    assert c["allochit"] > 5 * c["allocmiss"] > 0
