"""Counted loaded/previous-magazine hits (KmemCpuLayer._alloc_hit / _free_hit with cc_lock's
line local) give the statistics the recorded hits give: a trace recorder makes every hit take
the recorded path, and the run's results must not change."""

from __future__ import annotations

from pathlib import Path

from simrun import run_on

from experiments.config import validate
from experiments.run import run_experiment
from policies.base import CacheSpec
from policies.solaris import SolarisPolicy
from policies.solaris.cpu_cache import _cc_enter_local
from simcore import Machine, MachineConfig, MemoryConfig
from simcore.flags import KM_SLEEP
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


def test_each_hit_kind_is_counted_and_folded_as_its_own_cost():
    # kmem_cache_alloc A1 / A2 and kmem_cache_free F1 / F2 (seeds/002 L2190-2212, L2340-2354)
    # with loaded and previous magazines full: 15 pops of the loaded magazine, then the full
    # previous one is swapped in (kmem_cpu_reload) for the 16th; 16 frees: one push fills the
    # loaded magazine again, the next swaps in the now empty previous one, 14 more pushes
    # fill it
    m = Machine(MachineConfig(nodes=1, cpus_per_node=1),
                memory_config=MemoryConfig(total_bytes=256 << 20))
    p = SolarisPolicy(m)
    c = p.cache_create(CacheSpec("c64", 64))
    ccp = c.cache_cpu[0]
    held: list[int] = []

    def warm(t):
        for _ in range(30):
            held.append((yield from p.alloc(t, c, KM_SLEEP)))
        for b in held:
            yield from p.free(t, c, b)
        held.clear()

    run_on(m, 0, warm, span=50_000_000)
    assert (ccp.cc_magsize, ccp.cc_rounds, ccp.cc_prounds) == (15, 15, 15)
    p.fold_hits()
    lock = ccp.cc_lock
    before = (ccp.cc_alloc, ccp.cc_free, lock.stat.acquisitions, lock.hold_hist.count,
              m.metrics.hist("alloc.hit").count, m.metrics.hist("free.hit").count)
    charged = []

    def hits(t):
        start = t.pending
        for _ in range(16):
            buf = p.alloc_fast(t, c, KM_SLEEP)
            assert buf is not None
            held.append(buf)
        assert (ccp.hit_alloc, ccp.hit_alloc_reload) == (15, 1)
        assert (ccp.cc_rounds, ccp.cc_prounds) == (14, 0)
        while held:
            assert p.free_fast(t, c, held.pop())
        assert (ccp.hit_free, ccp.hit_free_reload) == (15, 1)
        assert (ccp.cc_rounds, ccp.cc_prounds) == (15, 15)
        charged.append(t.pending - start)
        yield from ()

    run_on(m, 0, hits, span=50_000_000)
    costs = m.costs
    hit = {op: costs["call"] + costs["lock_acquire"] + costs[op] + costs["lock_release"]
           for op in ("magazine_pop", "magazine_push")}
    assert charged == [16 * hit["magazine_pop"] + 16 * hit["magazine_push"]
                       + 2 * costs["object_move"]]
    p.fold_hits()
    assert (ccp.hit_alloc, ccp.hit_alloc_reload, ccp.hit_free, ccp.hit_free_reload) == (0,) * 4
    after = (ccp.cc_alloc, ccp.cc_free, lock.stat.acquisitions, lock.hold_hist.count,
             m.metrics.hist("alloc.hit").count, m.metrics.hist("free.hit").count)
    assert [a - b for a, b in zip(after, before, strict=True)] == [16, 16, 32, 32, 16, 16]
    assert m.metrics.hist("alloc.hit").max == hit["magazine_pop"] + costs["object_move"]
    p.check_invariants()


def test_usual_hits_counted_by_the_workload_give_the_tallied_latencies(monkeypatch):
    # the steady loop counts hits that charged the policy's usual cost (a plain pop or push)
    # and tallies the others (kmem_cpu_reload swaps, bounced lines) by value: the workload's
    # latency histograms, and everything else, are those of tallying every hit
    for size in (256, 32768):
        counted = _summary(size, traced=False)
        with monkeypatch.context() as mp:
            mp.setattr(SolarisPolicy, "usual_hit_ns", lambda self, cache: None)
            tallied = _summary(size, traced=False)
        assert counted == tallied
        lat = counted["workloads"][0]["caches"]["c"]["alloc"]
        assert lat["count"] == counted["ops"]["allocs"] > 1000
        assert lat["min"] < lat["p99"]  # hits of more than one cost were met


def test_cc_lock_taken_locally_leaves_the_holder_preemptible():
    # cc_lock is an adaptive mutex (kmutex_t): mutex_enter does not disable preemption, so a
    # thread holding it, on the local path as on the lock's own, may be preempted or block
    # (on the depot lock in the slow path) without a false sleep-in-atomic
    m = Machine(MachineConfig(nodes=1, cpus_per_node=1),
                memory_config=MemoryConfig(total_bytes=256 << 20))
    p = SolarisPolicy(m)
    c = p.cache_create(CacheSpec("c64", 64))
    lock = c.cache_cpu[0].cc_lock
    seen = []

    def body(t):
        before = t.preempt_count
        assert _cc_enter_local(t, lock)
        seen.append((lock.owner is t, t.preempt_count - before))
        yield from lock.unlock(t)
        seen.append((lock.owner is None, t.preempt_count - before))
        yield from lock.lock(t)
        seen.append((lock.owner is t, t.preempt_count - before))
        yield from lock.unlock(t)
        seen.append((lock.owner is None, t.preempt_count - before))

    run_on(m, 0, body, span=1_000_000)
    assert seen == [(True, 0)] * 4
