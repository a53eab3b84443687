"""steady's loop for policies with no fast path (`Steady._thread_slow`) against the general loop
(`Steady._thread`, which asks the base class's fast paths, sees them decline and goes through
`Workload.do_alloc` / `do_free`): the same summary, timeline and histograms for randomized
workloads (several caches, think time, preemption off, allocation failures, interrupts)."""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experiments.config import validate
from experiments.run import build, run_experiment
from policies.base import Policy
from workloads.steady import Steady

BASE = {"name": "slow", "seed": 3, "duration": "2ms", "machine": {"cpus_per_node": 4},
        "memory": {"size": "1GiB"}, "policy": {"name": "global_lock"},
        "caches": [{"name": "a", "size": 256}, {"name": "b", "size": "32KiB",
                                                 "ctor_cost": "30ns"}],
        "sampling": {"interval": "250us"}}


def _exp(steady: dict, tmp: Path, **over: object):
    d = copy.deepcopy(BASE)
    d["workloads"] = [{"kind": "steady", **steady}]
    d.update(over)
    return validate(d, tmp / "slow.toml")


def _outcome(exp) -> dict[str, bytes]:
    """Every file of the run's folder (summary, timeline, events, histograms, lock_stat...)."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "run"
        run_experiment(exp, out)
        return {str(f.relative_to(out)): f.read_bytes() for f in sorted(out.rglob("*"))
                if f.is_file()}


def _both(exp, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, dict]:
    """The run folder with the slow loop, and with the general loop in its place."""
    slow = _outcome(exp)
    with monkeypatch.context() as mp:
        mp.setattr(Steady, "_thread_slow", Steady._thread)
        general = _outcome(exp)
    return slow, general


def _summary(folder: dict[str, bytes]) -> dict:
    return json.loads(folder["summary.json"])


def test_global_lock_takes_the_slow_loop(tmp_path):
    sim = build(_exp({"live_objects": 8}, tmp_path))
    (w,) = sim.workloads
    assert type(sim.policy).alloc_fast is Policy.alloc_fast
    assert w.no_fast_paths


@pytest.mark.parametrize("policy", ["spl", "linux_slab"])
def test_a_policy_with_fast_paths_does_not(tmp_path, policy):
    sim = build(_exp({"live_objects": 8}, tmp_path, policy={"name": policy}))
    assert not sim.workloads[0].no_fast_paths
    off = _exp({"live_objects": 8}, tmp_path, policy={"name": policy},
               machine={"cpus_per_node": 4, "fast_paths": False})
    assert build(off).workloads[0].no_fast_paths


steady_params = st.fixed_dictionaries({
    "caches": st.sampled_from([["a"], ["b"], ["a", "b"]]),
    "live_objects": st.integers(1, 40),
    "lifetime": st.sampled_from([{"dist": "exponential", "mean": "2us"},
                                 {"dist": "fixed", "value": "20us"},
                                 {"dist": "uniform", "min": "1us", "max": "60us"}]),
    "think": st.sampled_from([0, "40ns", "3us"]),
    "threads_per_cpu": st.integers(1, 2),
    "preempt_disabled": st.booleans(),
    "flags": st.sampled_from(["KM_SLEEP", "KM_NOSLEEP"]),
    "start": st.sampled_from([0, "100us"]),
    "stop": st.sampled_from([None, "1500us"]),
})


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steady=steady_params, tight=st.booleans())
def test_slow_loop_matches_the_general_loop(tmp_path, monkeypatch, steady, tight):
    # a tight memory budget makes KM_NOSLEEP allocations fail (the failure counts)
    over = {"memory": {"size": "2MiB"}} if tight else {}
    exp = _exp(steady, tmp_path, **over)
    slow, general = _both(exp, monkeypatch)
    assert _summary(slow)["ops"]["allocs"] > 0
    assert slow == general


def test_slow_loop_matches_with_interrupts(tmp_path, monkeypatch):
    exp = _exp({"caches": ["a", "b"], "live_objects": 16,
                "lifetime": {"dist": "exponential", "mean": "5us"}}, tmp_path,
               workloads=[{"kind": "steady", "caches": ["a", "b"], "live_objects": 16,
                           "lifetime": {"dist": "exponential", "mean": "5us"}},
                          {"kind": "irq", "caches": ["a"],
                           "interval": {"dist": "exponential", "mean": "20us"}}])
    slow, general = _both(exp, monkeypatch)
    assert _summary(slow)["cpu"]["irqs"] > 0
    assert slow == general


def test_slow_loop_counts_failures_as_do_alloc(tmp_path, monkeypatch):
    # 2 MiB of memory cannot hold 4 x 40 live 32 KiB objects: KM_NOSLEEP allocations fail
    exp = _exp({"caches": ["a", "b"], "live_objects": 40, "flags": "KM_NOSLEEP"}, tmp_path,
               memory={"size": "2MiB"})
    slow, general = _both(exp, monkeypatch)
    ops = _summary(slow)["ops"]
    assert ops["alloc_failures"] > 0 and ops["allocs"] > ops["alloc_failures"]
    assert slow == general
