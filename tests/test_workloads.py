"""Workload generators: each one's defining property under a fixed seed, trace replay on every
policy, trace errors as file:line, and steady + irq figures in the summary."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from experiments.cli import main
from experiments.config import ConfigError, validate
from experiments.run import build, run_experiment
from policies.registry import available

MS = 1_000_000
BASE = {"name": "w", "seed": 4, "duration": "20ms", "machine": {"cpus_per_node": 4},
        "memory": {"size": "1GiB"}, "policy": {"name": "global_lock"},
        "caches": [{"name": "a", "size": 256}, {"name": "b", "size": 1024}]}


def exp(workloads, tmp_path: Path, **over):
    d = copy.deepcopy(BASE)
    d["workloads"] = workloads
    d.update(over)
    return validate(d, tmp_path / "x.toml")


def simulate(e):
    sim = build(e)
    sim.machine.run(e.duration)
    sim.policy.check_invariants()
    return sim


@pytest.mark.parametrize("lifetime", [{"dist": "fixed", "value": "100us"},
                                      {"dist": "exponential", "mean": "100us"},
                                      {"dist": "uniform", "min": "50us", "max": "150us"}])
def test_steady_rate_follows_population_over_mean_lifetime(tmp_path, lifetime):
    """Little's law: with the population held at its target, allocations per thread per
    second = live_objects / mean lifetime."""
    # the threads sleep ~2 us between deaths; without the idle-exit cost of each wake-up
    # (wakeup_ipi) the population stays at its target
    e = exp([{"kind": "steady", "caches": ["a"], "live_objects": 50, "lifetime": lifetime}],
            tmp_path, costs={"wakeup_ipi": 0})
    sim = simulate(e)
    w = sim.workloads[0]
    expected = 4 * (50 + 50 * 20 * MS / 100_000)
    assert w.allocs == pytest.approx(expected, rel=0.05)
    assert w.allocs - w.frees <= 4 * 50


def test_producer_consumer_every_free_is_cross_cpu(tmp_path):
    e = exp([{"kind": "producer_consumer", "caches": ["a"], "producers": [0, 1],
              "consumers": [2, 3], "batch": 8}], tmp_path)
    w = simulate(e).workloads[0]
    assert w.frees > 1000 and w.counts()["cross_cpu_frees"] == w.frees


def test_larson_cross_cpu_frees_follow_the_hand_over_rate(tmp_path):
    ring = exp([{"kind": "larson", "caches": ["a", "b"], "slots": 64, "rounds": 256}], tmp_path)
    w = simulate(ring).workloads[0]
    c = w.counts()
    # after a hand-over every slot holds another CPU's object; 256 random replacements of 64
    # slots touch each slot ~4 times, so nearly a round's first touches are cross-CPU frees:
    # 64 x (1 - e^-4) per 256 frees ~ 0.245
    assert c["handovers"] > 20
    assert c["cross_cpu_frees"] / w.frees == pytest.approx(64 * (1 - 2.718 ** -4) / 256,
                                                          rel=0.1)
    alone = exp([{"kind": "larson", "caches": ["a"], "cpus": [0], "slots": 64,
                  "rounds": 256}], tmp_path)
    assert simulate(alone).workloads[0].counts()["cross_cpu_frees"] == 0


def test_mixed_lifetimes_survivors_pin_many_slabs(tmp_path):
    e = exp([{"kind": "mixed_lifetimes", "caches": ["a"], "cpus": [0], "long_objects": 4000,
              "keep_fraction": 0.05, "live_short": 0}], tmp_path)
    sim = simulate(e)
    w = sim.workloads[0]
    assert w.kept == 200 and len(w.long_held) == 200
    st = sim.policy.stats(sim.caches["a"])
    assert st.objs_inuse == 200
    # 200 survivors of 4000 spread over the fill's slabs: far more slabs than they need
    assert st.slabs > 5 * (200 // st.objs_per_slab + 1)
    assert st.frag_external > 0.7


def test_irq_arrival_rate(tmp_path):
    e = exp([{"kind": "irq", "caches": ["a"], "interval": {"dist": "exponential",
                                                           "mean": "50us"}}], tmp_path)
    sim = simulate(e)
    irqs = sum(c.irq_count for c in sim.machine.cpus)
    assert irqs == pytest.approx(4 * 20 * MS / 50_000, rel=0.05)


def test_size_classes_creates_the_zio_family_and_follows_zipf(tmp_path):
    from workloads.size_classes import SizeClasses, SizeClassesParams

    family = SizeClasses.creates(SizeClassesParams(max_size=16 << 20))
    assert len(family) == 56 and family[0] == "zio_buf_512" and family[-1] == "zio_buf_16777216"
    assert "zio_buf_5120" in family and "zio_buf_4608" not in family
    e = exp([{"kind": "size_classes", "max_size": "64KiB", "live_objects": 8,
              "lifetime": {"dist": "fixed", "value": "2us"}, "size_dist": "zipf"}],
            tmp_path, caches=[], duration="10ms")
    sim = simulate(e)
    w = sim.workloads[0]
    k = len(w.sizes)
    assert {n for n in sim.caches} == {f"zio_buf_{s}" for s in w.sizes}
    n = sum(w.per_class)
    h = sum(1 / (i + 1) for i in range(k))
    assert n > 5000
    for i in (0, 1, 3):
        assert w.per_class[i] / n == pytest.approx(1 / (i + 1) / h, rel=0.1)


def test_pressure_episodes_at_configured_times(tmp_path):
    e = exp([{"kind": "steady", "caches": ["a"], "live_objects": 8},
             {"kind": "pressure", "start": "2ms", "duration": "3ms", "period": "6ms",
              "take": 0.5, "reap_interval": "1ms"}], tmp_path)
    sim = simulate(e)
    starts = [ev["time_ns"] for ev in sim.machine.metrics.log.events
              if ev["kind"] == "pressure_start"]
    ends = [ev["time_ns"] for ev in sim.machine.metrics.log.events
            if ev["kind"] == "pressure_end"]
    assert starts == [2 * MS, 8 * MS, 14 * MS] and ends == [5 * MS, 11 * MS, 17 * MS]


TRACES = Path("experiments/traces")


@pytest.mark.parametrize("policy", sorted(available()))
@pytest.mark.parametrize("trace", ["sample.csv", "sample.ftrace.txt"])
def test_sample_traces_replay_on_every_policy(tmp_path, policy, trace):
    e = exp([{"kind": "trace", "file": str((TRACES / trace).resolve())}], tmp_path,
            caches=[], policy={"name": policy})
    sim = simulate(e)
    c = sim.workloads[0].counts()
    assert c["trace_allocs"] == 610 and c["trace_frees"] == 610
    assert c["replayed_allocs"] == c["allocs"] == 610
    assert c["replayed_frees"] == c["frees"] == 610
    names = {sim.policy.cache_name(x) for x in sim.policy.caches} if policy != "spl" else set(
        sim.caches)
    assert {"dentry", "skbuff_head_cache", "kmalloc-1024"} <= names


def _trace_cfg(tmp_path: Path, body: str, name: str = "t.csv", **params) -> Path:
    (tmp_path / name).write_text(body)
    extra = "".join(f'{k} = "{v}"\n' for k, v in params.items())
    cfg = tmp_path / "t.toml"
    cfg.write_text(f'name = "t"\nduration = "5ms"\n[policy]\nname = "spl"\n'
                   f'[[workloads]]\nkind = "trace"\nfile = "{name}"\n{extra}')
    return cfg


def test_malformed_trace_line_is_file_line_and_exit_2(tmp_path, capsys):
    cfg = _trace_cfg(tmp_path, "time_ns,cpu,op,cache,size,object\n"
                               "10,0,alloc,a,64,x\n20,0,grab,a,64,y\n")
    assert main(["run", str(cfg), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"kmemsim: error: {tmp_path / 't.csv'}:3: op must be alloc or free, "
                   "got 'grab'"]
    assert not (tmp_path / "out").exists()
    cfg = _trace_cfg(tmp_path, "cpus=2\n  bash-1 [000] 1.000001: kmalloc: ptr=0x1 "
                               "bytes_alloc=64\n  garbage here\n", name="t.txt")
    assert main(["run", str(cfg), "--out", str(tmp_path / "out")]) == 2
    assert "t.txt:3: not an ftrace event line" in capsys.readouterr().err


def test_free_of_unknown_object_is_reported_with_its_line(tmp_path, capsys):
    body = "time_ns,cpu,op,cache,size,object\n10,0,alloc,a,64,x\n20,1,free,,,y\n30,1,free,,,x\n"
    cfg = _trace_cfg(tmp_path, body)
    assert main(["run", str(cfg), "--out", str(tmp_path / "out")]) == 2
    assert "t.csv:3: free of object y that the trace never allocated" in \
        capsys.readouterr().err
    cfg = _trace_cfg(tmp_path, body, unknown_frees="skip")
    out = tmp_path / "ok"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    import json
    w = json.loads((out / "summary.json").read_text())["workloads"][0]
    assert w["skipped_frees"] == 1 and w["allocs"] == 1 and w["frees"] == 1


def test_steady_with_irq_reports_irq_off_and_irq_latency(tmp_path):
    e = exp([{"kind": "steady", "caches": ["a", "b"], "live_objects": 32},
             {"kind": "irq", "caches": ["a"], "interval": {"dist": "exponential",
                                                           "mean": "20us"}}],
            tmp_path, policy={"name": "linux_slab"})
    res = run_experiment(e, tmp_path / "run")
    cpu = res.summary["cpu"]
    assert cpu["irqs"] == pytest.approx(4 * 20 * MS / 20_000, rel=0.05)
    lat, off = cpu["irq_latency"], cpu["irq_off"]
    assert lat["count"] == cpu["irqs"] and lat["max"] > 0 and lat["p99"] >= lat["p50"]
    assert off["count"] > 0 and cpu["irq_off_max_ns"] == off["max"] > 0
    # most interrupts arrive with IRQs on and are taken at the next operation boundary; one
    # that arrives while a woken thread is still coming back (wakeup_ipi 3 us + context
    # switch 2 us) waits for that
    assert lat["p50"] < 8192 and lat["mean"] < max(off["max"], 3000 + 2000)


def test_workload_creating_caches_fails_cleanly_on_a_policy_that_cannot(tmp_path, capsys):
    d = copy.deepcopy(BASE)
    d.update(caches=[], policy={"name": "linux_slab"},
             workloads=[{"kind": "size_classes", "max_size": "1MiB"}])
    import tomli_w
    f = tmp_path / "s.toml"
    f.write_text(tomli_w.dumps(d))
    assert main(["run", str(f), "--out", str(tmp_path / "o")]) == 2
    assert "linux_slab cannot create its caches" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(ConfigError, match="no caches"):
        exp([{"kind": "steady"}], tmp_path, caches=[])
