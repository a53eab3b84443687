"""spl: one test per SPL finding of the fidelity review (reference/fidelity-review.md, "SPL"),
each asserting the corrected behaviour from the seed line it names (seed 000 =
000_491b338ea4b92d9b.txt, seed 001 = the older revision)."""

from __future__ import annotations

from functools import partial

import pytest
from simrun import run_on

from policies.base import CacheSpec
from policies.spl import SplPolicy
from policies.spl.structs import KMC_BIT_REAPING, KMC_FLAG_BITS
from simcore import Machine, MachineConfig, MemoryConfig
from simcore.flags import KM_NOSLEEP, KM_SLEEP
from simcore.taskq import Taskq

MS = 1_000_000
S = 1_000_000_000
US = 1_000
_run = partial(run_on, span=2_000 * MS)


def _setup(cpus: int = 1, size: int = 32 * 1024, flags: tuple[str, ...] = (),
           mem: MemoryConfig | None = None, **tun):
    m = Machine(MachineConfig(nodes=1, cpus_per_node=cpus),
                memory_config=mem or MemoryConfig(total_bytes=1 << 30))
    p = SplPolicy(m, tun)
    c = p.cache_create(CacheSpec("zio_buf_32768", size, flags=flags))
    p.start()
    return m, p, c


# --- finding 4: the 2023 KM_NOSLEEP rule comes before the REAPING wait ------------------------

def _nosleep_during_reap(rule: str):
    """A KM_NOSLEEP allocation on an empty cache while a reaper holds KMC_BIT_REAPING (set
    here by hand); the reap ends at 10 ms."""
    m, p, c = _setup(nosleep_rule=rule)
    c.flags.value |= 1 << KMC_BIT_REAPING

    def reaper_done(t):
        yield from t.sleep(10 * MS)
        yield from c.flags.clear_bit(t, KMC_BIT_REAPING)
        yield from c.flags.wake_up_bit(t, KMC_BIT_REAPING)

    got = []

    def body(t):
        got.append((yield from p.alloc(t, c, KM_NOSLEEP)))
        got.append(t.now)

    m.spawn("reaper", reaper_done, cpu=0)
    m.spawn("caller", body, cpu=0)
    m.run(50 * MS)
    return m, p, c, got


def test_nosleep_takes_an_emergency_object_before_the_reaping_wait():
    # seed 000:1015 returns spl_emergency_alloc for KM_NOSLEEP before the REAPING test at
    # 1024: the caller never sleeps, gets a page-allocated object and no growth is dispatched
    m, p, c, (obj, done_at) = _nosleep_during_reap("best_effort_emergency")
    assert obj is not None and not m.memory.is_vmalloc_addr(obj)
    assert c.obj_emergency == 1 and c.obj_emergency_max == 1
    assert done_at < 10 * MS
    assert p.taskq.dispatched == 0
    assert m.metrics.counters.get("sched.sleep_in_atomic", 0) == 0


def test_seed_001_rule_waits_for_the_reap_and_returns_null():
    # seed 001 has no KM_NOSLEEP test in spl_cache_grow: the caller sleeps on REAPING until
    # the reaper wakes it, then -EAGAIN makes the refill return NULL (KM_NOSLEEP: no restart)
    m, p, c, (obj, done_at) = _nosleep_during_reap("wait_like_km_sleep")
    assert obj is None
    assert done_at >= 10 * MS
    assert c.obj_emergency == 0


def test_nosleep_rule_default_is_seed_000():
    assert SplPolicy(Machine(MachineConfig(cpus_per_node=1)), {}).tun["nosleep_rule"] \
        == "best_effort_emergency"


# --- finding 10: reap-storm's reaps (spl-0.6 skc_reclaim callback, cond_resched points) ------

def _reap_with_a_runnable_thread(preempt: str) -> tuple[int, int, int]:
    """1 CPU: a thread allocates and reaps until no slab is empty, makes a second thread runnable on its CPU
    and reaps; the skc_reclaim callback (500 us) has a cond_resched every RECLAIM_STEP_NS.
    Returns (reap start, reap end, when the second thread first ran)."""
    m = Machine(MachineConfig(nodes=1, cpus_per_node=1, preempt=preempt),
                memory_config=MemoryConfig(total_bytes=1 << 30))
    p = SplPolicy(m, {"skc_reclaim_ns": 500 * US})
    c = p.cache_create(CacheSpec("zio_buf_32768", 32 * 1024))
    p.start()
    times: dict[str, int] = {}

    def other(t):
        times["other"] = t.env.now
        yield from t.sync()

    def reaper(t):
        yield from p.alloc(t, c, KM_SLEEP)
        yield from p.reap(t, c)  # frees the empty slab: now none is empty, the callback runs
        assert c.slab_total == c.slab_alloc > 0
        yield from t.sync()
        m.spawn("other", other, cpu=0)
        times["start"] = t.env.now
        yield from p.reap(t, c)
        yield from t.sync()
        times["end"] = t.env.now

    m.spawn("reaper", reaper, cpu=0)
    m.run(20 * MS)
    assert m.metrics.counters["spl.skc_reclaim_calls"] == 1
    return times["start"], times["end"], times["other"]


@pytest.mark.parametrize("preempt", ["none", "voluntary", "full"])
def test_skc_reclaim_cond_resched_gives_the_cpu_up_only_when_asked(preempt):
    # cond_resched() reschedules only with TIF_NEED_RESCHED set (a preempting wake-up or the
    # tick past the slice); a thread that merely became runnable does not set it, so it runs
    # once the reap is over, whatever the preemption model
    start, end, other = _reap_with_a_runnable_thread(preempt)
    assert end - start >= 500 * US
    assert other >= end


def test_sleeping_skc_reclaim_holds_reaping_for_its_work_and_sleeps_and_frees_the_cpu():
    # an ARC-style callback: 1 ms of eviction work split around 4 sleeps of 2 ms; the reap
    # holds KMC_BIT_REAPING for at least the work plus the sleeps (9 ms), and while the
    # reaper sleeps a thread that became runnable on its CPU runs at once
    m = Machine(MachineConfig(nodes=1, cpus_per_node=1),
                memory_config=MemoryConfig(total_bytes=1 << 30))
    p = SplPolicy(m, {"skc_reclaim_ns": 1 * MS, "skc_reclaim_sleeps": 4,
                      "skc_reclaim_sleep_ns": 2 * MS})
    c = p.cache_create(CacheSpec("zio_buf_32768", 32 * 1024))
    p.start()
    times: dict[str, int] = {}

    def other(t):
        times["other"] = t.env.now
        times["reaping"] = c.flags.peek(KMC_BIT_REAPING)
        yield from t.sync()

    def reaper(t):
        yield from p.alloc(t, c, KM_SLEEP)
        yield from p.reap(t, c)  # frees the empty slab: now none is empty, the callback runs
        yield from t.sync()
        m.spawn("other", other, cpu=0)
        times["start"] = t.env.now
        yield from p.reap(t, c)
        yield from t.sync()
        times["end"] = t.env.now

    m.spawn("reaper", reaper, cpu=0)
    m.run(50 * MS)
    assert m.metrics.counters["spl.skc_reclaim_calls"] == 1
    assert times["end"] - times["start"] >= 9 * MS
    assert times["reaping"] and times["other"] < times["start"] + 1 * MS


# --- finding 5: spl-0.7 spl_cache_age reclaims after on_each_cpu, holding skc_ref ---------------

def test_spl_cache_age_reclaims_the_slabs_the_age_outs_emptied_holding_a_reference():
    # spl-0.7 spl_cache_age: atomic_inc(skc_ref); on_each_cpu(spl_magazine_age);
    # spl_slab_reclaim; re-dispatch; atomic_dec(skc_ref). Magazine 16 (refill 8), slabs of 8.
    m, p, c = _setup(spl_kmem_cache_age="trylock", skc_delay=0.003,
                     spl_kmem_cache_magazine_size=16)
    held = []

    def churn(t):
        for _ in range(8):
            held.append((yield from p.alloc(t, c, KM_SLEEP)))
        for o in held:
            yield from p.free(t, c, o)

    run_on(m, 0, churn, span=500_000)
    # all 8 objects of the one slab sit in CPU 0's magazine; the slab is allocated
    assert len(c.mags[0].objs) == 8 and c.slab_total == 1
    refs = []
    orig = p.spl_slab_reclaim

    def recording(t, skc):
        if t.name.startswith("spl_kmem_cache"):
            refs.append(skc.ref)
        yield from orig(t, skc)

    p.spl_slab_reclaim = recording
    m.run(m.env.now + 20 * MS)
    # an age-out flushed the unused magazine (8 = refill objects) and the same spl_cache_age
    # freed the now-empty slab, with its own reference held
    assert len(c.mags[0].objs) == 0
    assert c.slab_total == 0 and c.slabs_freed == 1
    assert refs and all(r == 1 for r in refs)
    assert c.ref == 0
    p.check_invariants()


# --- finding 6: spl_kmem_cache_create's checks -------------------------------------------------

@pytest.mark.parametrize("align, verify", [(24, "ISP2"), (4, "SPL_KMEM_CACHE_ALIGN"),
                                           (8192, "PAGE_SIZE")])
def test_create_verifies_the_alignment(align, verify):
    # seed 000:743-745: VERIFY(ISP2(align)), align >= SPL_KMEM_CACHE_ALIGN, align <= PAGE_SIZE
    m = Machine(MachineConfig(cpus_per_node=1))
    p = SplPolicy(m, {})
    with pytest.raises(ValueError, match=verify):
        p.cache_create(CacheSpec("bad", 4096, align=align))


def test_create_keeps_a_valid_alignment_for_the_geometry():
    # seed 000:746 skc_obj_align = align; zio_buf_20480 with PAGESIZE alignment: 8 objects of
    # roundup(20480, 4096) + roundup(40, 4096) = 24576 bytes after a 4096-byte header
    m = Machine(MachineConfig(cpus_per_node=1))
    p = SplPolicy(m, {})
    c = p.cache_create(CacheSpec("zio_buf_20480", 20480, align=4096, flags=("KMC_KVMEM",)))
    assert c.geo.slab_size == 4096 + 8 * (20480 + 4096) == 200704


def test_kmc_slab_larger_than_spl_max_kmem_order_nr_pages_fails():
    # seed 000:786: a KMC_SLAB cache above SPL_MAX_KMEM_ORDER_NR_PAGES * PAGE_SIZE is not
    # created; kmem_cache.h: 1 << (PAGE_ALLOC_COSTLY_ORDER - 1) = 4 pages under SLUB,
    # KMALLOC_MAX_SIZE >> PAGE_SHIFT under SLAB (2.6.17: 128 KiB = 32 pages)
    m = Machine(MachineConfig(cpus_per_node=1))
    p = SplPolicy(m, {})
    limit = {"slub": 4 * 4096, "linux_slab": 32 * 4096}[p.linux.name]
    assert p.spl_max_kmem_order_nr_pages() * 4096 == limit
    ok = p.cache_create(CacheSpec("at_limit", limit, flags=("KMC_SLAB",)))
    assert ok.is_slab
    with pytest.raises(ValueError, match="SPL_MAX_KMEM_ORDER_NR_PAGES"):
        p.cache_create(CacheSpec("over_limit", limit + 1, flags=("KMC_SLAB",)))


def test_kvmem_wins_when_both_type_flags_are_forced():
    # seed 000:774 tests KMC_KVMEM first: both bits set -> a kvmem cache with magazines
    m = Machine(MachineConfig(cpus_per_node=2))
    p = SplPolicy(m, {})
    c = p.cache_create(CacheSpec("both", 512, flags=("KMC_SLAB", "KMC_KVMEM")))
    assert not c.is_slab and c.geo is not None and len(c.mags) == 2
    both = (1 << KMC_FLAG_BITS["KMC_SLAB"]) | (1 << KMC_FLAG_BITS["KMC_KVMEM"])
    assert c.flags.value & both == both


def test_cli_reports_a_failed_creation_as_one_line_and_exit_2(tmp_path, capsys):
    from experiments.cli import main

    exp = tmp_path / "big.toml"
    exp.write_text('duration = "1ms"\n[policy]\nname = "spl"\n'
                   '[[caches]]\nname = "huge"\nsize = "8MiB"\nflags = ["KMC_SLAB"]\n'
                   '[[workloads]]\nkind = "steady"\n')
    out = tmp_path / "out"
    assert main(["run", str(exp), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert str(exp) in err[0] and "huge" in err[0] and "SPL_MAX_KMEM_ORDER_NR_PAGES" in err[0]
    assert not out.exists() or not any(out.iterdir())


# --- finding 8 (idle half): idle dynamic taskq workers exit ------------------------------------

def test_idle_dynamic_workers_exit_at_most_once_per_timeout():
    # spl-taskq.c taskq_thread / taskq_thread_should_stop (spl_taskq_thread_timeout_ms = 5000):
    # a worker that finds the queue empty exits unless it is the first thread, a spawn is
    # pending or less than the timeout passed since the last spawn or exit
    m = Machine(MachineConfig(nodes=1, cpus_per_node=4))
    tq = Taskq(m, "spl_kmem_cache", nthreads=4, dynamic=True, idle_timeout=5 * S)

    def task(w):
        yield from w.sleep(10 * MS)

    for k in range(4):   # overlapping tasks: a new worker for each
        m.env.timeout(k * MS).callbacks.append(lambda _ev: tq.dispatch_nowait(task))
    m.run(1 * S)
    assert len(tq.workers) == 4 and tq.exited == 0   # idle, but within 5 s of the last spawn

    def one_each(_ev=None):
        for _ in range(len(tq.workers)):
            tq.dispatch_nowait(task)

    # every worker runs a task and comes round its loop: the first non-first worker to find
    # the queue empty exits, the others are within 5 s of that exit and stay
    for when, left in ((6 * S, 3), (8 * S, 3), (12 * S, 2), (18 * S, 1), (24 * S, 1)):
        m.env.timeout(when - m.env.now).callbacks.append(one_each)
        m.run(when + 100 * MS)
        assert len(tq.workers) == left, when
    assert tq.exited == 3
    assert tq.workers[0].name == "spl_kmem_cache/0"   # the first thread never exits


def test_spl_taskq_uses_the_kernel_idle_timeout():
    p = SplPolicy(Machine(MachineConfig(cpus_per_node=1)), {})
    assert p.taskq.idle_timeout == 5000 * MS


# --- finding 12: the zfs10646 what-if covers every IRQs-on skc_lock site ----------------------

def _lock_irq_states(setting: str) -> list[bool]:
    """IRQ state at every skc_lock acquisition while a cache deadlocks, hands out emergency
    objects, frees them and reclaims (the sites 000:340, 427, 443, 473, 952, 1080, 1336).
    The emergency sites need a DEADLOCKED cache, hence a growth that waits on writeback in
    direct reclaim: with the seed's fstrans (PF_MEMALLOC_NOIO on the taskq workers and in
    __spl_cache_grow, 000:948) it never does, so the setup takes the 2012 rule
    (spl_fstrans = "2012", as reclaim-deadlock does); where skc_lock is taken, and with which
    IRQ state, does not depend on it."""
    mem = MemoryConfig(total_bytes=64 << 20)
    m, p, c = _setup(cpus=2, mem=mem, skc_lock_irqs_on=setting,
                     spl_kmem_cache_magazine_size=2, spl_fstrans="2012")
    mm = m.memory
    mm.reserve(mm.free - (mm.min_pages + 60))
    release = m.env.event()
    m.env.timeout(300 * MS).callbacks.append(lambda _ev: release.succeed())

    def dependency(t):
        if not release.triggered:
            yield from t.block(release, ("reclaim", "test dependency"))
            mm.unreserve(2000)

    mm.add_reclaim_dependency("test", dependency)
    states: list[bool] = []
    lock = c.lock
    orig = lock.lock

    def recording(t):
        states.append(t.irqs_off)
        yield from orig(t)

    lock.lock = recording
    held = []

    def body(t):
        for _ in range(3):
            held.append((yield from p.alloc(t, c, KM_SLEEP)))
        yield from t.sleep(400 * MS)
        for o in held:
            yield from p.free(t, c, o)
        for _ in range(4):
            o = yield from p.alloc(t, c, KM_SLEEP)
            yield from p.free(t, c, o)
        yield from p.reap(t, c)

    m.spawn("user", body, cpu=0)
    m.run(1000 * MS)
    assert c.obj_deadlock == 1 and c.obj_emergency_max == 3 and c.obj_emergency == 0
    p.check_invariants()
    return states


def test_zfs10646_irqsave_everywhere_takes_skc_lock_with_irqs_off_at_every_site():
    seed = _lock_irq_states("spin_lock")
    what_if = _lock_irq_states("irqsave_everywhere")
    # the seed takes skc_lock with IRQs on at those sites ...
    assert seed.count(False) >= 7
    # ... the what-if never does (lock_irqsave disables IRQs before it spins)
    assert what_if and all(what_if)


# --- finding 7: ZFS caches as zio_init creates them -----------------------------------------

def test_zio_init_alignment_rule():
    from workloads.size_classes import zio_align

    # SPA_MINBLOCKSIZE up to 2 KiB; then min(p2 / 4, PAGESIZE) for multiples of p2 / 4
    assert [zio_align(s) for s in (512, 1536, 2048)] == [512, 512, 512]
    assert [zio_align(s) for s in (2560, 3584, 4096, 5120, 8192, 10240)] == \
        [512, 512, 1024, 1024, 2048, 2048]
    assert [zio_align(s) for s in (16384, 20480, 131072, 1 << 24)] == [4096] * 4
    assert zio_align(4608) == 0 and zio_align(9216) == 0   # zio_init creates no cache


def _slab_line(text: str, name: str) -> list[str]:
    rows = [ln.split() for ln in text.splitlines()[2:]]
    return next(r for r in rows if r[0] == name)


def _assert_zio_buf_20480(folder):
    # zfs#4925's /proc/spl/kmem/slab: zio_buf_20480 slabsize 200704; KMC_NODEBUG is bit 1
    row = _slab_line((folder / "spl_slab.txt").read_text(), "zio_buf_20480")
    assert int(row[4]) == 200704 and int(row[5]) == 20480
    flags = int(row[1], 16)
    assert flags & (1 << KMC_FLAG_BITS["KMC_NODEBUG"])
    assert flags & (1 << KMC_FLAG_BITS["KMC_KVMEM"])   # above spl_kmem_cache_slab_limit


def test_size_classes_zio_buf_20480_has_the_real_slab_size_and_nodebug(tmp_path):
    from experiments.cli import main

    exp = tmp_path / "zio.toml"
    exp.write_text('duration = "1ms"\n[policy]\nname = "spl"\n'
                   '[[workloads]]\nkind = "size_classes"\nmax_size = "32KiB"\n'
                   'live_objects = 4\n')
    out = tmp_path / "out"
    assert main(["run", str(exp), "--out", str(out), "--no-progress"]) == 0
    _assert_zio_buf_20480(out)
    row = _slab_line((out / "spl_slab.txt").read_text(), "zio_data_buf_20480")
    assert int(row[4]) == 200704


def test_shipped_reclaim_deadlock_config_zio_buf_20480(tmp_path):
    from experiments import scenarios
    from experiments.run import run_experiment

    sc = scenarios.load(scenarios.available()["reclaim-deadlock"])
    sc.base["duration"] = "1ms"
    run_experiment(scenarios.experiment_for(sc, sc.variants[0]), tmp_path / "rd")
    _assert_zio_buf_20480(tmp_path / "rd")


def test_an_interrupt_handlers_allocation_inside_a_waiting_allocation_keeps_its_own_account():
    """zfs10646 what-if: interrupt handlers allocate KM_NOSLEEP on the thread whose own
    allocation waits in spl_cache_grow (IRQs on). Each slow-path call records one runnable
    time, its latency less its own sleeps: never below zero, never above the latency (the
    handler's call used to subtract the interrupted call's sleep, and reset it)."""
    from experiments import scenarios
    from experiments.run import run_experiment

    sc = scenarios.load(scenarios.available()["irq-aging-lockup"])
    v = next(x for x in sc.variants if x.name == "zfs10646-irqsave-grow")
    v.overrides["duration"] = "20ms"
    res = run_experiment(scenarios.experiment_for(sc, v), None)
    assert res.status == "ok"
    lat = res.summary["latency"]
    slow = [lat[k] for k in ("alloc.refill", "alloc.grow", "alloc.emergency")]
    runnable = lat["spl.alloc_runnable"]
    assert runnable["count"] == sum(h["count"] for h in slow) > 0
    assert runnable["min"] >= 0
    assert runnable["total"] <= sum(h["total"] for h in slow)
