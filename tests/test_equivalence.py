"""The fast path changes nothing but speed: batched local clocks versus one event per step, and
plain-function fast paths versus the generator paths, give identical results for every policy
(same counters, same simulated times, same timeline)."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.config import validate
from experiments.run import run_experiment
from policies.registry import available


def _exp(policy: str, batching: bool, fast: bool) -> dict:
    return {
        "name": "equiv", "seed": 11, "duration": "3ms",
        "machine": {"cpus_per_node": 4, "batching": batching, "fast_paths": fast},
        "memory": {"size": "2GiB"},
        "policy": {"name": policy},
        "caches": [{"name": "c32k", "size": "32KiB", "ctor_cost": "30ns"},
                   {"name": "c512", "size": 512}],
        "workloads": [{"kind": "steady", "caches": ["c32k", "c512"], "live_objects": 24,
                       "lifetime": {"dist": "exponential", "mean": "3us"}, "think": "50ns"}],
        "sampling": {"interval": "500us"},
    }


def _run(policy: str, batching: bool, fast: bool) -> tuple[dict, list]:
    exp = validate(_exp(policy, batching, fast), Path("equiv.toml"))
    sim_summary = run_experiment(exp, None).summary
    sim_summary["machine"].pop("batching")
    return sim_summary, sim_summary.pop("caches")


@pytest.mark.parametrize("policy", sorted(available()))
def test_batched_and_unbatched_are_identical(policy):
    a = _run(policy, batching=True, fast=True)
    b = _run(policy, batching=False, fast=True)
    assert a[0]["ops"]["allocs"] > 100
    assert a == b


@pytest.mark.parametrize("policy", sorted(available()))
def test_fast_paths_change_nothing(policy):
    assert _run(policy, batching=True, fast=True) == _run(policy, batching=True, fast=False)
