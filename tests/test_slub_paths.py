"""slub acceptance 2 and 4: a cpu-slab hit takes no SimPy event, no IRQ-off section and no
list_lock; list_lock only on the list-state changes of __slab_free (seed linux-6.8-mm-slub.c);
the 6.18 sheaves (linux-6.18-slab-sheaves-patch.txt): alloc_cpu_sheaf / free_cpu_sheaf on a
steady mix, and full sheaves through the barn with the counts alloc_from_pcs,
__pcs_replace_empty_main, free_to_pcs and __pcs_replace_full_main give."""

from __future__ import annotations

from functools import partial

from simrun import run_on

from policies.base import CacheSpec
from policies.slub import SlubPolicy
from policies.slub.structs import STAT_ITEMS
from simcore import Machine, MachineConfig
from simcore.flags import KM_SLEEP

run = partial(run_on, span=50_000_000)


def setup(cpus=2, size=512, **tun):
    m = Machine(MachineConfig(cpus_per_node=cpus))
    p = SlubPolicy(m, tun)
    s = p.cache_create(CacheSpec(f"kmalloc-{size}", size))
    return m, p, s


def st(s, name):
    return s.total(STAT_ITEMS.index(name))


def alloc_n(p, s, n, out):
    def body(t):
        for _ in range(n):
            out.append((yield from p.alloc(t, s, KM_SLEEP)))
    return body


def free_these(p, s, objs):
    def body(t):
        for o in list(objs):
            yield from p.free(t, s, o)
    return body


def test_cpu_slab_hits_create_no_event_no_irq_off_and_no_list_lock():
    m, p, s = setup()
    held: list[int] = []
    run(m, 0, alloc_n(p, s, 1, held))
    run(m, 0, free_these(p, s, held))
    lock = s.node[0].list_lock.stat
    cpu = m.cpus[0]
    before = (lock.acquisitions, m.irq_off.count, cpu.irq_off_total, st(s, "alloc_fastpath"),
              st(s, "free_fastpath"), st(s, "alloc_slowpath"))
    seen = []
    scheduled = []
    schedule = m.env.schedule

    def counting_schedule(*args, **kw):
        scheduled.append(args)
        return schedule(*args, **kw)

    def alternate(t):
        m.env.schedule = counting_schedule
        now, pending = m.env.now, t.pending
        for _ in range(1000):
            o = yield from p.alloc(t, s, KM_SLEEP)
            yield from p.free(t, s, o)
        seen.append((len(scheduled), m.env.now - now, t.pending - pending))
        m.env.schedule = schedule

    run(m, 0, alternate)
    (events, moved, charged), = seen
    c = m.costs
    assert events == 0 and moved == 0
    assert charged == 1000 * (2 * c["call"] + c["magazine_pop"] + c["magazine_push"])
    assert (lock.acquisitions, m.irq_off.count, cpu.irq_off_total) == before[:3]
    assert st(s, "alloc_fastpath") - before[3] == 1000
    assert st(s, "free_fastpath") - before[4] == 1000
    assert st(s, "alloc_slowpath") == before[5]
    p.stats(s)
    assert m.metrics.hist("alloc.hit").count >= 1000
    assert m.metrics.hist("alloc.hit").max == c["call"] + c["magazine_pop"]
    p.check_invariants()


def fill_one_slab(m, p, s):
    """CPU 0 allocates one slab's objects and one more, so the first slab is full and no
    longer the cpu slab (deactivate_slab: full slabs are on no list)."""
    held: list[int] = []
    run(m, 0, alloc_n(p, s, s.geo.objects + 1, held))
    first = s.owner[held[0]]
    assert all(s.owner[o] is first for o in held[:-1]) and not first.freelist
    assert not first.frozen and not first.node_partial
    return first, held[:-1], held[-1]


def test_list_lock_only_when_the_list_state_changes_with_cpu_partial():
    m, p, s = setup()
    slab, objs, _last = fill_one_slab(m, p, s)
    lock = s.node[0].list_lock.stat
    acq = lock.acquisitions
    # first free to the full slab: put_cpu_partial on CPU 1, no list_lock
    run(m, 1, free_these(p, s, objs[:1]))
    assert lock.acquisitions == acq
    assert st(s, "cpu_partial_free") == 1 and s.cpu_slab[1].partial == [slab]
    # frees that leave objects in use: cmpxchg only
    run(m, 1, free_these(p, s, objs[1:-1]))
    assert lock.acquisitions == acq and st(s, "free_slowpath") == len(objs) - 1
    # the last object: list_lock is taken (the slab is on CPU 1's partial list, not the
    # node's, so it stays there)
    run(m, 1, free_these(p, s, objs[-1:]))
    assert lock.acquisitions == acq + 1
    assert slab.inuse == 0 and s.cpu_slab[1].partial == [slab]
    assert st(s, "free_remove_partial") == 0 and st(s, "free_slab") == 0
    p.check_invariants()


def test_list_lock_without_cpu_partial_and_discard_above_min_partial():
    m, p, s = setup(CONFIG_SLUB_CPU_PARTIAL=False, min_partial=0)
    slab, objs, _last = fill_one_slab(m, p, s)
    lock = s.node[0].list_lock.stat
    acq = lock.acquisitions
    run(m, 1, free_these(p, s, objs[:1]))  # full -> partial: add_partial under list_lock
    assert lock.acquisitions == acq + 1 and st(s, "free_add_partial") == 1
    assert slab.node_partial and s.node[0].nr_partial == 1
    run(m, 1, free_these(p, s, objs[1:-1]))
    assert lock.acquisitions == acq + 1
    pages = m.memory.stats["free_pages"]
    run(m, 1, free_these(p, s, objs[-1:]))  # empty with nr_partial >= min_partial (0)
    assert lock.acquisitions == acq + 2
    assert st(s, "free_remove_partial") == 1 and st(s, "free_slab") == 1
    assert m.memory.stats["free_pages"] - pages == s.geo.pages
    assert slab not in set(s.owner.values())
    p.check_invariants()


def test_remote_free_to_a_frozen_cpu_slab_takes_no_lock():
    m, p, s = setup()
    held: list[int] = []
    run(m, 0, alloc_n(p, s, 3, held))
    acq = s.node[0].list_lock.stat.acquisitions
    run(m, 1, free_these(p, s, held))
    assert st(s, "free_frozen") == 3 and s.node[0].list_lock.stat.acquisitions == acq
    # CPU 0 takes them back from the slab's freelist: get_freelist (alloc_refill)
    out: list[int] = []
    run(m, 0, alloc_n(p, s, s.geo.objects - 3 + 1, out))
    assert st(s, "alloc_refill") == 1
    p.check_invariants()


def test_steady_mix_is_served_by_the_sheaves():
    m, p, s = setup(sheaf_capacity=8)
    held: list[int] = []
    run(m, 0, alloc_n(p, s, 1, held))
    run(m, 0, free_these(p, s, held))
    base = {k: st(s, k) for k in ("alloc_cpu_sheaf", "free_cpu_sheaf", "alloc_fastpath",
                                  "free_fastpath", "barn_get", "barn_put", "sheaf_refill")}

    def mix(t):
        live = []
        for i in range(2000):
            if len(live) < 4 and i % 3:
                live.append((yield from p.alloc(t, s, KM_SLEEP)))
            elif live:
                yield from p.free(t, s, live.pop(0))
        for o in live:
            yield from p.free(t, s, o)

    run(m, 0, mix)
    assert st(s, "alloc_cpu_sheaf") - base["alloc_cpu_sheaf"] == s.allocs - 1
    assert st(s, "free_cpu_sheaf") - base["free_cpu_sheaf"] == s.frees - 1
    for k in ("alloc_fastpath", "free_fastpath", "barn_get", "barn_put", "sheaf_refill"):
        assert st(s, k) == base[k], k
    p.check_invariants()


def test_producer_consumer_moves_full_sheaves_through_the_barn():
    cap, k = 4, 16
    m, p, s = setup(sheaf_capacity=cap)
    barn = s.node[0].barn
    objs: list[int] = []
    run(m, 0, alloc_n(p, s, cap * k, objs))
    # every cap allocations: no full sheaf in the barn (barn_get_fail), refill the old main
    # (the barn's one empty sheaf after the first time) by bulk allocation
    assert st(s, "barn_get_fail") == k and st(s, "barn_get") == 0
    assert st(s, "sheaf_refill") == cap * k and st(s, "alloc_cpu_sheaf") == cap * k
    assert st(s, "sheaf_alloc") == 2 + 1  # two mains at creation, one refilled sheaf
    assert (barn.nr_full, barn.nr_empty) == (0, 1)
    run(m, 1, free_these(p, s, objs))
    # CPU 1: main full at free 5 -> the barn's empty becomes main (the full one the spare);
    # then every cap frees the barn takes the full main (barn_put: no empty left, a new one
    # is allocated) until MAX_FULL_SHEAVES = 10; after that barn_put_fail and the spare is
    # flushed to the slabs
    assert st(s, "free_cpu_sheaf") == cap * k
    assert st(s, "barn_put") == 10 and st(s, "barn_put_fail") == k - 1 - 1 - 10
    assert st(s, "sheaf_flush") == cap * (k - 12)
    assert st(s, "sheaf_alloc") == 3 + 10
    assert (barn.nr_full, barn.nr_empty) == (10, 0)
    more: list[int] = []
    run(m, 0, alloc_n(p, s, 2 * cap, more))
    assert st(s, "barn_get") == 2 and barn.nr_full == 8
    p.check_invariants()


def test_irq_handler_falls_back_when_the_sheaves_are_locked():
    m, p, s = setup(cpus=1, sheaf_capacity=4)
    got: list[int] = []

    def handler(h):
        got.append((yield from p.alloc(h, s, 1)))

    def body(t):
        # the first allocation refills through the barn: the barn lock's irqrestore takes the
        # interrupt while the sheaves' local lock is held
        m.raise_irq(0, handler, "test-irq", at=m.env.now + 1)
        yield from p.alloc(t, s, KM_SLEEP)

    run(m, 0, body)
    assert got and got[0] is not None
    assert s.pcs_trylock_fail >= 1 and st(s, "alloc_slowpath") >= 1
    p.check_invariants()


def _equiv_run(batching: bool, fast: bool) -> dict:
    from pathlib import Path

    from experiments.config import validate
    from experiments.run import run_experiment
    exp = validate({
        "name": "equiv", "seed": 3, "duration": "2ms",
        "machine": {"cpus_per_node": 4, "batching": batching, "fast_paths": fast},
        "memory": {"size": "2GiB"},
        "policy": {"name": "slub", "tunables": {"sheaf_capacity": 8}},
        "caches": [{"name": "c512", "size": 512}, {"name": "c64", "size": 64}],
        "workloads": [{"kind": "steady", "live_objects": 24,
                       "lifetime": {"dist": "exponential", "mean": "3us"}, "think": "50ns"},
                      {"kind": "producer_consumer", "caches": ["c512"], "producers": [0],
                       "consumers": [3], "batch": 8}],
        "sampling": {"interval": "500us"},
    }, Path("equiv.toml"))
    summary = run_experiment(exp, None).summary
    summary["machine"].pop("batching")
    assert summary["invariants"] == "ok"
    return summary


def test_sheaves_fast_paths_and_batching_change_nothing():
    a = _equiv_run(True, True)
    assert a["ops"]["allocs"] > 100 and a["caches"]["c512"]["barn_put"] > 0
    assert a == _equiv_run(True, False) == _equiv_run(False, True)


def test_node_directed_allocation_bypasses_sheaves_and_switches_the_cpu_slab():
    m = Machine(MachineConfig(nodes=2, cpus_per_node=2))
    p = SlubPolicy(m, {"sheaf_capacity": 4})
    s = p.cache_create(CacheSpec("kmalloc-512", 512))
    got: list[int] = []

    def body(t):
        got.append((yield from p.alloc(t, s, KM_SLEEP)))      # sheaf refill from node 0
        got.append((yield from p.alloc_node(t, s, KM_SLEEP, 1)))
        got.append((yield from p.alloc_node(t, s, KM_SLEEP, 1)))
        got.append((yield from p.alloc_node(t, s, KM_SLEEP, 0)))

    run(m, 0, body)
    nodes = [s.owner[o].node for o in got]
    assert nodes == [0, 1, 1, 0]
    # kmem_cache_alloc_node skips the sheaves; a cpu slab of the wrong node is deactivated
    assert st(s, "alloc_cpu_sheaf") == 1
    assert st(s, "alloc_node_mismatch") == 2 and st(s, "alloc_fastpath") >= 1
    assert s.node[1].nr_slabs == 1 and s.cpu_slab[0].slab.node == 0
    p.check_invariants()
