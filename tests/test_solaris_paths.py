"""solaris: the CPU layer and the depot (kmem_cache_alloc / kmem_cache_free / kmem_depot_*,
seeds/002 L2084-2420) and the exhaustion paths. Scenarios S1, S3, S13 and S14 of
reference/solaris-kmem.md 9.2."""

from __future__ import annotations

import random
from functools import partial

from simrun import run_on

from policies.base import CacheSpec
from policies.solaris import SolarisPolicy
from policies.solaris.magazine import Magazine
from simcore import Machine, MachineConfig, MemoryConfig
from simcore.flags import KM_NOSLEEP, KM_SLEEP

HIT_NS = 10 + 20 + 5 + 10
"""A magazine hit: call + lock_acquire + magazine_pop/push + lock_release."""


def _setup(cpus: int, memory: MemoryConfig | None = None, **spec):
    m = Machine(MachineConfig(nodes=1, cpus_per_node=cpus),
                memory_config=memory or MemoryConfig(total_bytes=256 << 20))
    p = SolarisPolicy(m)
    c = p.cache_create(CacheSpec("c64", 64, **spec))
    return m, p, c


_run = partial(run_on, span=50_000_000)


def _ks(p, c):
    return p.stats(c).extra


def test_s1_one_cpu_bursts_up_to_m_are_all_magazine_hits():
    m, p, c = _setup(1, ctor_cost=300)
    held: list[int] = []

    def warm(t):
        for _ in range(30):
            held.append((yield from p.alloc(t, c, KM_SLEEP)))
        for b in held:
            yield from p.free(t, c, b)
        held.clear()

    _run(m, 0, warm)
    ks0 = _ks(p, c)
    # only the first allocations reach the slab layer, each constructed
    assert ks0["slab_alloc"] == 30 and ks0["slab_create"] == 1
    assert m.metrics.hist("alloc.grow").count == 30 and m.metrics.hist("alloc.grow").min >= 300
    # 30 frees: two magazines allocated on the free path, each pushed to and popped from the
    # depot's empty list; loaded and previous are both full
    assert ks0["depot_free"] == 2 and ks0["depot_alloc"] == 0
    assert p.kmem_magtype[3].mt_cache.inuse == 2
    ccp = c.cache_cpu[0]
    assert (ccp.cc_rounds, ccp.cc_prounds) == (15, 15)
    hits = (m.metrics.hist("alloc.hit").count, m.metrics.hist("free.hit").count)
    ops = []

    def bursts(t):
        rng = random.Random(1)
        env_before = m.env.now
        pending_before = t.pending
        n = 0
        for _ in range(200):
            k = rng.randint(1, 15)
            for _ in range(k):
                held.append((yield from p.alloc(t, c, KM_SLEEP)))
            while held:
                yield from p.free(t, c, held.pop())
            n += k
        # every hit was charged locally: no SimPy event, the clock did not move
        ops.append((n, m.env.now - env_before, t.pending - pending_before))

    _run(m, 0, bursts)
    (n, env_moved, charged), = ops
    assert env_moved == 0 and charged == 2 * n * HIT_NS
    ks = _ks(p, c)
    assert ks["slab_alloc"] == 30 and ks["depot_alloc"] == 0 and ks["depot_free"] == 2
    assert ks["buf_constructed"] == 30 <= 2 * 15
    assert sum(cc.cc_alloc for cc in c.cache_cpu) == n
    assert m.metrics.hist("alloc.hit").count - hits[0] == n
    assert m.metrics.hist("free.hit").count - hits[1] == n
    assert m.metrics.hist("alloc.hit").max == HIT_NS
    p.check_invariants()


def test_previous_magazine_swaps_only_when_full_or_empty():
    m, p, c = _setup(1)
    held: list[int] = []
    ccp = c.cache_cpu[0]
    trace = []

    def body(t):
        for _ in range(30):
            held.append((yield from p.alloc(t, c, KM_SLEEP)))
        for b in held:
            yield from p.free(t, c, b)
        held.clear()
        loaded, prev = ccp.cc_loaded, ccp.cc_ploaded
        # A1 drains the loaded magazine; A2 swaps in the full previous one only when empty
        for _ in range(15):
            held.append((yield from p.alloc(t, c, KM_SLEEP)))
        trace.append((ccp.cc_loaded is loaded, ccp.cc_rounds, ccp.cc_prounds))
        held.append((yield from p.alloc(t, c, KM_SLEEP)))
        trace.append((ccp.cc_loaded is prev, ccp.cc_rounds, ccp.cc_prounds))
        # F2: the loaded (prev, 14 rounds) is not full, so a free pushes onto it; after
        # filling it the next free swaps in the empty previous magazine
        yield from p.free(t, c, held.pop())
        trace.append((ccp.cc_loaded is prev, ccp.cc_rounds, ccp.cc_prounds))
        yield from p.free(t, c, held.pop())
        trace.append((ccp.cc_loaded is loaded, ccp.cc_rounds, ccp.cc_prounds))

    _run(m, 0, body)
    assert trace == [(True, 0, 15), (True, 14, 0), (True, 15, 0), (True, 1, 15)]
    assert _ks(p, c)["depot_alloc"] == 0 and _ks(p, c)["slab_alloc"] == 30


def test_s3_producer_consumer_exchange_one_magazine_each_way_per_m_operations():
    m, p, c = _setup(2, ctor_cost=200)
    queue: list[int] = []
    mag15 = p.kmem_magtype[3].mt_cache

    def produce(k):
        def body(t):
            for _ in range(k):
                queue.append((yield from p.alloc(t, c, KM_SLEEP)))
        return body

    def consume(k):
        def body(t):
            for _ in range(k):
                yield from p.free(t, c, queue.pop(0))
        return body

    after = []
    for _ in range(20):
        _run(m, 0, produce(15))
        after_p = _ks(p, c)["full_magazines"]
        _run(m, 1, consume(15))
        after.append((after_p, _ks(p, c)["full_magazines"]))
    ks = _ks(p, c)
    # rounds 1-3 miss to the slab layer (nothing in the depot yet); from round 4 the
    # producer takes one full magazine per round, from round 6 it returns one empty; the
    # consumer took one empty magazine per round (the first five freshly allocated)
    assert ks["slab_alloc"] == 45
    assert ks["depot_alloc"] == 20 - 3
    assert ks["depot_free"] == 20
    assert mag15.inuse == 5
    assert after[3:] == [(0, 1)] * 17
    assert after[:3] == [(0, 0), (0, 0), (0, 1)]
    # the producer outruns the consumer: no full magazine left, it misses to the slab layer
    grow = m.metrics.hist("alloc.grow").count
    _run(m, 0, produce(15))
    _run(m, 0, produce(15))
    assert _ks(p, c)["slab_alloc"] == 45 + 15
    assert m.metrics.hist("alloc.grow").count == grow + 15
    # the consumer outruns the producer: full magazines pile up in the depot
    _run(m, 0, produce(45))
    _run(m, 1, consume(75))
    assert _ks(p, c)["full_magazines"] == 5
    p.check_invariants()


def test_depot_contention_counts_only_failed_trylocks_of_kmem_depot_alloc():
    m, p, c = _setup(2)
    m.costs.values["wakeup_ipi"] = 0  # the sleeps below end at the times written
    lock = c.cache_depot_lock
    log = []

    def holder(t):
        yield from lock.lock(t)
        t.charge_ns(5_000)
        yield from lock.unlock(t)

    def user(t):
        yield from t.sleep(1_000)
        mp = yield from p.kmem_depot_alloc(t, c, c.cache_full)
        log.append((mp, c.cache_depot_contention, lock.stat.contentions))
        yield from t.sleep(10_000)
        yield from lock.lock(t)
        t.charge_ns(5_000)
        yield from lock.unlock(t)

    def freer(t):
        mag = p.kmem_magtype[3]
        mp_addr = yield from p.kmem_cache_alloc(t, mag.mt_cache, KM_NOSLEEP)
        yield from t.sleep(16_000 - t.now)
        yield from p.kmem_depot_free(t, c, c.cache_empty, Magazine(mp_addr, [0] * 15))
        log.append((c.cache_depot_contention, lock.stat.contentions))

    m.spawn("holder", holder, cpu=1)
    m.spawn("user", user, cpu=0)
    m.spawn("freer", freer, cpu=1)
    m.run(100_000)
    # the pop found the lock held: one contention; the push waited too, uncounted
    assert log[0] == (None, 1, 1)
    assert log[1] == (1, 2)
    assert c.cache_empty.ml_total == 1


def test_free_path_allocates_magazines_nosleep_and_pushes_them_through_the_depot():
    m, p, c = _setup(1)
    mag15 = p.kmem_magtype[3].mt_cache
    held: list[int] = []

    def body(t):
        for _ in range(16):
            held.append((yield from p.alloc(t, c, KM_SLEEP)))
        yield from p.free(t, c, held.pop())

    _run(m, 0, body)
    ccp = c.cache_cpu[0]
    # F5: the magazine came from kmem_magazine_15 (a slab-layer miss there), went to the
    # depot's empty list and was popped again by F4 (depot_free = empty ml_alloc = 1)
    assert mag15.inuse == 1 and mag15.cache_slab_alloc == 1
    assert ccp.cc_loaded.addr == mag15.partial.slabs[0].mem + (mag15.geo.chunks(0) - 1) * 128
    assert (ccp.cc_rounds, ccp.cc_prounds) == (1, -1)
    assert c.cache_empty.ml_alloc == 1 and c.cache_empty.ml_total == 0
    assert _ks(p, c)["free"] == 1 + 1


def test_s13_nosleep_under_exhaustion():
    mem = MemoryConfig(total_bytes=16 << 20)
    m, p, c = _setup(2, memory=mem, dtor_cost=70)
    p.start()
    held: list[int] = []
    got: list = []

    def fill(t):
        for _ in range(2 * 62):
            held.append((yield from p.alloc(t, c, KM_SLEEP)))
        for _ in range(15):
            yield from p.free(t, c, held.pop())

    _run(m, 0, fill)
    assert _ks(p, c)["slab_create"] == 2 and c.cache_bufslab == 0
    m.memory.reserve(m.memory.free)

    def nosleep(t):
        for _ in range(16):
            got.append((yield from p.alloc(t, c, KM_NOSLEEP)))

    _run(m, 0, nosleep)
    # magazine hits still succeed; the slab-layer miss fails and starts a kmem_reap
    assert all(b is not None for b in got[:15]) and got[15] is None
    ks = _ks(p, c)
    assert ks["alloc_fail"] == 1 and ks["slab_create"] == 2
    assert p.kmem_reap_passes == 1 and p.reaping["kmem_reaping"]
    assert m.metrics.log.totals["alloc_fail"] >= 1
    held.extend(got[:15])
    slab_free = ks["slab_free"]
    # the magazine cache still has free buffers in its one slab; take them all, so that the
    # next magazine needs a new slab, which cannot be had
    mcache = p.kmem_magtype[3].mt_cache
    grabbed: list[int] = []

    def exhaust(t):
        while True:
            b = yield from p.kmem_cache_alloc(t, mcache, KM_NOSLEEP)
            if b is None:
                break
            grabbed.append(b)

    _run(m, 1, exhaust)
    assert grabbed

    def frees(t):
        for _ in range(16):
            yield from p.free(t, c, held.pop())

    _run(m, 0, frees)
    # 15 frees fill the empty loaded magazine; the 16th needs a new magazine, whose
    # KM_NOSLEEP allocation fails, so the object is destructed and goes to its slab
    ks = _ks(p, c)
    assert ks["slab_free"] == slab_free + 1
    assert c.cache_cpu[0].cc_rounds == 15
    assert p.kmem_magtype[3].mt_cache.cache_alloc_fail >= 1
    assert c.cache_bufslab == 1
    p.check_invariants()


def test_s14_sleep_under_exhaustion_blocks_until_memory_returns():
    mem = MemoryConfig(total_bytes=16 << 20, watermark_min=0.0, watermark_low=0.0,
                       watermark_high=0.0)
    m = Machine(MachineConfig(nodes=1, cpus_per_node=2), memory_config=mem)
    p = SolarisPolicy(m)
    c = p.cache_create(CacheSpec("c64", 64))
    other = p.cache_create(CacheSpec("other", 64, flags=("KMC_NOMAGAZINE",)))
    p.start()
    others: list[int] = []

    def fill(t):
        for _ in range(124):
            others.append((yield from p.alloc(t, other, KM_SLEEP)))

    _run(m, 1, fill)
    m.memory.reserve(m.memory.free)
    result = []

    def sleeper(t):
        buf = yield from p.alloc(t, c, KM_SLEEP)
        result.append((buf, t.now))

    def releaser(t):
        yield from t.sleep(2_500_000)
        for b in others:
            yield from p.free(t, other, b)
        result.append(("destroyed", t.now))

    start = m.env.now
    m.spawn("sleeper", sleeper, cpu=0)
    m.spawn("releaser", releaser, cpu=1)
    m.run(start + 50_000_000)
    (marker, t_free), (buf, t_got) = sorted(result, key=lambda r: r[1])
    assert marker == "destroyed" and buf is not None
    # two slabs of 62: a page freed can go to the kmem_magazine_1 slab that the free
    # of the slab's kmem_va_4096 address into its quantum cache needs (vmem_free ->
    # kmem_cache_free -> a KM_NOSLEEP magazine from kmem_msb), the second to the sleeper
    assert other.cache_slab_destroy == 2
    # the sleeper waited in vmem (it polled every tick meanwhile) and was woken by the
    # slab destroy, not by the next tick
    assert p.vmem_waits >= 2
    assert 0 < t_got - t_free < 100_000
    assert _ks(p, c)["alloc_fail"] == 0
    p.check_invariants()


def test_shipped_config_writes_kmastat_with_the_other_reports(tmp_path):
    from experiments.cli import main

    out = tmp_path / "sol"
    assert main(["run", "experiments/configs/solaris.toml", "--out", str(out), "--no-progress",
                 "--set", "duration='3ms'"]) == 0
    for f in ("kmastat.txt", "kmem_slabs.txt", "kstat.txt", "slabinfo.txt", "lock_stat.txt",
              "summary.json"):
        assert (out / f).stat().st_size > 0
    kmastat = (out / "kmastat.txt").read_text().splitlines()
    assert kmastat[0].split()[:2] == ["cache", "buf"]
