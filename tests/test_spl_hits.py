"""Counted SPL magazine hits (alloc_fast / free_fast: one charge and a per-magazine count,
folded into the IRQ-off and latency statistics by SplPolicy.fold_hits) give the results that
recorded hits give. A trace recorder makes every hit record its IRQ-off section and latency
one by one, an unbatched clock makes it add its step, `fast_paths = false` sends it through
the generator path (spl_kmem_cache_alloc / spl_kmem_cache_free with IRQs disabled and
enabled), and the spl-0.7 aging timer makes an alloc hit stamp skm_age: none of them may
change a result."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.config import validate
from experiments.run import run_experiment
from simcore.trace import TraceRecorder


def _exp(aging: str, batching: bool, fast: bool) -> dict:
    # one KVMEM cache (the bench's: slab limit 0) with a constructor and a destructor, so the
    # workload's single-cache loop calls the fast paths and the hit costs include them; the
    # second workload's one long-lived object leaves its CPUs' magazines unused for jiffies,
    # which the aging timer (every 1 ms with skc_delay 3 ms) flushes
    return {
        "name": "spl-hits", "seed": 3, "duration": "12ms",
        "machine": {"cpus_per_node": 4, "batching": batching, "fast_paths": fast},
        "memory": {"size": "2GiB"},
        "policy": {"name": "spl", "tunables": {"spl_kmem_cache_slab_limit": 0,
                                               "spl_kmem_cache_age": aging,
                                               "skc_delay": 0.003}},
        "caches": [{"name": "c", "size": 32768, "ctor_cost": "20ns", "dtor_cost": "10ns"}],
        "workloads": [{"kind": "steady", "cpus": [0, 1], "live_objects": 16,
                       "lifetime": {"dist": "exponential", "mean": "400ns"}},
                      {"kind": "steady", "cpus": [2, 3], "live_objects": 1,
                       "lifetime": {"dist": "exponential", "mean": "6ms"}}],
        "sampling": {"interval": "1ms"},
    }


def _summary(aging: str, traced: bool = False, batching: bool = True,
             fast: bool = True) -> dict:
    exp = validate(_exp(aging, batching, fast), Path("spl-hits.toml"))
    summary = run_experiment(exp, None, trace=TraceRecorder() if traced else None).summary
    summary["machine"].pop("batching")
    return summary


@pytest.mark.parametrize("aging", ["off", "trylock"])
def test_counted_hits_give_what_recorded_hits_give(aging):
    counted = _summary(aging)
    assert counted["ops"]["allocs"] > 10_000
    if aging != "off":
        assert counted["events"]["magazine_age"] > 0
    assert counted == _summary(aging, traced=True)
    assert counted == _summary(aging, batching=False)
    assert counted == _summary(aging, fast=False)
