"""phases workload: boundaries at the configured times, no allocations while idle, a burst
reaching its population, a ramp in between, pressure reserving pages for its phase only."""

from __future__ import annotations

import json

from experiments.config import validate
from experiments.run import build, run_experiment

EXP = {
    "name": "ph", "seed": 2, "duration": "12ms",
    "machine": {"cpus_per_node": 2}, "memory": {"size": "512MiB"},
    "policy": {"name": "global_lock"},
    "caches": [{"name": "c", "size": 256}],
    "workloads": [{"kind": "phases", "start": "1ms", "phases": [
        {"name": "warm", "duration": "2ms", "live_objects": 10, "think": "1us"},
        {"name": "up", "kind": "ramp", "duration": "2ms", "live_objects": 400},
        {"name": "burst", "kind": "burst", "duration": "2ms", "live_objects": 400,
         "lifetime": {"dist": "fixed", "value": "1500us"}},
        {"name": "quiet", "kind": "idle", "duration": "3ms"},
        {"name": "squeeze", "kind": "pressure", "duration": "1ms", "live_objects": 5,
         "reserve": 0.5},
    ]}],
    "sampling": {"interval": "100us"},
}


def test_phase_boundaries_and_properties(tmp_path):
    exp = validate(json.loads(json.dumps(EXP)), tmp_path / "x.toml")
    sim = build(exp)
    wl = sim.workloads[0]
    m = sim.machine
    reserved = []
    m.env.timeout(10_500_000).callbacks.append(lambda _e: reserved.append(m.memory.reserved))
    m.env.timeout(11_500_000).callbacks.append(lambda _e: reserved.append(m.memory.reserved))
    m.run(exp.duration)
    ev = [e for e in m.metrics.log.events if e["kind"] == "phase"]
    assert [(e["time_ns"], e["name"]) for e in ev] == [
        (1_000_000, "warm"), (3_000_000, "up"), (5_000_000, "burst"), (7_000_000, "quiet"),
        (10_000_000, "squeeze"), (11_000_000, "end")]
    assert wl.phase_allocs[3] == 0  # idle: nothing allocated
    assert wl.phase_allocs[1] > 300  # the ramp grew the population
    assert reserved[0] == m.memory.total_pages // 2 and reserved[1] == 0
    # the burst's objects (1.5 ms fixed lifetime) are all freed during the idle phase
    live = [r for r in m.metrics.timeline.rows if 9_000_000 <= r["time_ns"] < 10_000_000]
    assert all(r["cache.c.objs_inuse"] == 0 for r in live)
    peak = max(r["cache.c.objs_inuse"] for r in m.metrics.timeline.rows
               if 5_000_000 <= r["time_ns"] < 7_000_000)
    assert 2 * 350 <= peak <= 2 * 400


def test_phases_run_is_deterministic(tmp_path):
    exp = validate(json.loads(json.dumps(EXP)), tmp_path / "x.toml")
    a = run_experiment(exp, tmp_path / "a")
    run_experiment(exp, tmp_path / "b")
    for f in ("summary.json", "timeline.parquet", "events.parquet"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    assert a.summary["ops"]["allocs"] > 0
