"""linux_slab: checklist items 1-5, 7, 9-14 of reference/linux-slab.md section 9, patch 004's
arithmetic, geometry against the reference's worked table, and the slabinfo layout."""

from __future__ import annotations

import zlib
from functools import partial

import pytest
from simrun import run_on

from policies.base import CacheSpec
from policies.linux_slab import LinuxSlabPolicy
from policies.linux_slab.geometry import enable_cpucache, geometry
from simcore import Machine, MachineConfig, MemoryConfig
from simcore.flags import KM_NOSLEEP, KM_SLEEP


def setup(cpus: int = 2, nodes: int = 1, size: int = 32, flags=("SLAB_HWCACHE_ALIGN",),
          memory: int = 256 << 20, **tun):
    m = Machine(MachineConfig(nodes=nodes, cpus_per_node=cpus),
                memory_config=MemoryConfig(total_bytes=memory))
    p = LinuxSlabPolicy(m, tun)
    c = p.cache_create(CacheSpec(f"size-{size}", size, flags=tuple(flags)))
    return m, p, c


run = partial(run_on, span=50_000_000)


def alloc_n(p, c, n, out, flags=KM_SLEEP):
    def body(t):
        for _ in range(n):
            out.append((yield from p.alloc(t, c, flags)))
    return body


def free_all(p, c, objs):
    def body(t):
        while objs:
            yield from p.free(t, c, objs.pop())
    return body


@pytest.mark.parametrize("size,order,num,left,mgmt,off,colours,limit,batch,shared,free_limit", [
    (32, 0, 112, 0, 512, False, 0, 120, 60, 8, 412),
    (64, 0, 59, 0, 320, False, 0, 120, 60, 8, 359),
    (128, 0, 30, 64, 192, False, 1, 120, 60, 8, 330),
    (192, 0, 20, 128, 128, False, 2, 120, 60, 8, 320),
    (256, 0, 15, 128, 128, False, 2, 120, 60, 8, 315),
    (512, 0, 8, 0, 80, True, 0, 54, 27, 8, 143),
    (1024, 0, 4, 0, 64, True, 0, 54, 27, 8, 139),
    (2048, 0, 2, 0, 56, True, 0, 24, 12, 8, 62),
    (4096, 0, 1, 0, 52, True, 0, 24, 12, 8, 61),
    (8192, 1, 1, 0, 52, True, 0, 8, 4, 0, 21),
    (131072, 5, 1, 0, 52, True, 0, 8, 4, 0, 21),
])
def test_geometry_matches_the_worked_table(size, order, num, left, mgmt, off, colours, limit,
                                           batch, shared, free_limit):
    g = geometry(size, hwcache_align=True)
    e = enable_cpucache(g.buffer_size)
    assert (g.gfporder, g.num, g.leftover, g.slab_size, g.off_slab, g.colour) == (
        order, num, left, mgmt, off, colours)
    assert (e.limit, e.batchcount, e.shared) == (limit, batch, shared)
    _m, _p, c = setup(cpus=4, size=size)
    assert c.nodelists[0].free_limit == free_limit
    assert c.nodelists[0].shared is None if not shared else c.nodelists[0].shared.limit == \
        shared * batch


def test_item1_alternating_alloc_free_is_all_hits_without_list_lock():
    m, p, c = setup()
    held: list[int] = []
    run(m, 0, alloc_n(p, c, 1, held))
    run(m, 0, free_all(p, c, held))
    lock = c.nodelists[0].list_lock.stat
    acq, hit0, miss0 = lock.acquisitions, c.allochit, c.allocmiss

    def alternate(t):
        for _ in range(5000):
            o = yield from p.alloc(t, c, KM_SLEEP)
            yield from p.free(t, c, o)

    run(m, 0, alternate)
    assert c.allochit - hit0 == 5000 and c.allocmiss == miss0 and c.freemiss == 0
    assert lock.acquisitions == acq


def test_item2_refill_sizes_fresh_cache_cap_then_batch_bounded_by_slabs():
    """First refill of an untouched array takes 16; later ones batchcount (60) but never past
    what the partial/free lists hold (must_grow with objects in hand does not grow); a refill
    that had to grow returns at most min(batch, num)."""
    m, p, c = setup()
    ac = c.array[0]
    fills: list[int] = []

    def body(t):
        for _ in range(400):
            before = c.allocmiss
            yield from p.alloc(t, c, KM_SLEEP)
            if c.allocmiss != before:
                fills.append(ac.avail + 1)

    run(m, 0, body)
    # num = 112: slab1 16 + 60 + 36; slab2 60 + 52; slab3 60 + 52; slab4 ...
    assert fills[:7] == [16, 60, 36, 60, 52, 60, 52]
    assert c.grown == 4 and c.allocmiss == len(fills)


def test_item2_allocation_burst_from_shared_array_misses_once_per_batch():
    m, p, c = setup()
    held: list[int] = []
    run(m, 1, alloc_n(p, c, 600, held))
    run(m, 1, free_all(p, c, held))
    # CPU 1's frees filled its array and flushed batches of 60 until the shared array was
    # full (480); the rest went back to the slabs
    assert c.nodelists[0].shared.avail == 480
    listallocs, acq = c.num_allocations, c.nodelists[0].list_lock.stat.acquisitions
    miss0 = c.allocmiss
    run(m, 0, alloc_n(p, c, 300, held))
    # the first refill after an untouched interval is capped at 16, then 60 per miss
    assert c.allocmiss - miss0 == 1 + -(-(300 - 16) // 60) == 6
    assert c.nodelists[0].list_lock.stat.acquisitions - acq == 6
    assert c.num_allocations == listallocs  # shared-array refills do not touch the slabs


def test_item3_free_burst_into_empty_array_flushes_once_per_batch():
    m, p, c = setup(cpucache_shared=0)
    held: list[int] = []
    run(m, 1, alloc_n(p, c, 300, held))
    h0, f0 = c.freehit, c.freemiss
    run(m, 0, free_all(p, c, held))
    # frees 1..120 hit; the 121st, 181st and 241st flush 60 each
    assert c.freemiss - f0 == 3 and c.freehit - h0 == 297
    assert c.array[0].avail == 300 - 3 * 60


def _ping_pong(p, c, m, rounds, batch):
    """Producer on CPU 0 allocates `batch` objects, consumer on CPU 1 frees them, repeated."""
    held: list[int] = []
    for _ in range(rounds):
        run(m, 0, alloc_n(p, c, batch, held))
        run(m, 1, free_all(p, c, held))


def test_item4_producer_consumer_through_the_shared_array():
    m, p, c = setup()
    _ping_pong(p, c, m, 20, 60)
    lock = c.nodelists[0].list_lock.stat
    acq, listallocs = lock.acquisitions, c.num_allocations
    _ping_pong(p, c, m, 50, 60)
    objs = 50 * 60
    # one refill (producer) and one flush (consumer) per 60 objects; the slabs stay idle
    assert (lock.acquisitions - acq) / objs == pytest.approx(2 / 60, rel=0.05)
    assert c.num_allocations == listallocs


def test_item4_without_shared_array_the_slab_lists_work():
    m, p, c = setup(cpucache_shared=0)
    _ping_pong(p, c, m, 20, 60)
    listallocs = c.num_allocations
    _ping_pong(p, c, m, 50, 60)
    assert c.num_allocations - listallocs >= 50 * 60 * 0.9


def test_item5_acquisitions_per_object_shrink_as_one_over_batchcount():
    rates = {}
    holds = {}
    for batch in (15, 60):
        m, p, c = setup(cpucache_limit=2 * batch, cpucache_batchcount=batch, cpucache_shared=0)
        _ping_pong(p, c, m, 10, 60)
        st = c.nodelists[0].list_lock.stat
        a0, h0 = st.acquisitions, st.holdtime_total
        _ping_pong(p, c, m, 40, 60)
        rates[batch] = (st.acquisitions - a0) / (40 * 60)
        holds[batch] = (st.holdtime_total - h0) / (st.acquisitions - a0)
    assert rates[15] / rates[60] == pytest.approx(4, rel=0.1)
    assert holds[60] > 2.5 * holds[15]


def test_item7_grow_adds_one_slab_at_the_free_tail_and_failure_returns_null():
    m, p, c = setup(memory=1 << 20)
    held: list[int] = []
    run(m, 0, alloc_n(p, c, 1, held))
    assert c.grown == 1 and len(c.nodelists[0].slabs_partial) == 1
    # exhaust memory with atomic allocations until grow fails with an empty array
    run(m, 0, alloc_n(p, c, 40_000, held, KM_NOSLEEP))
    assert held[-1] is None and c.alloc_fail >= 1 and c.array[0].avail == 0
    got = [o for o in held if o is not None]
    assert len(got) == c.grown * c.geo.num
    p.check_invariants()


def test_item9_reaper_timing_and_mutex_skip(monkeypatch):
    m, p, c = setup(cpus=2)
    starts: dict[int, list[int]] = {0: [], 1: []}
    real = p.cache_reap

    def spy(t):
        starts[t.cpu.id].append(t.now)
        yield from real(t)

    monkeypatch.setattr(p, "cache_reap", spy)
    p.start()
    m.run(9_500_000_000)
    ms = 1_000_000
    # HZ + 3 x cpu jiffies (plus the kworker's context switch)
    assert 1000 * ms <= starts[0][0] < 1000 * ms + 10_000
    assert 1003 * ms <= starts[1][0] < 1003 * ms + 10_000
    for cpu in (0, 1):
        gaps = [b - a for a, b in zip(starts[cpu], starts[cpu][1:], strict=False)]
        assert len(gaps) >= 3 and all(2000 * ms <= g < 2000 * ms + 50_000 for g in gaps)
    offset = (zlib.crc32(b"size-32") % 4000) * ms
    # node-level work: next_reap first due at 4 s + the per-cache offset, then +4 s
    first_due = 4000 * ms + offset
    node_passes = [s for s in sorted(starts[0] + starts[1]) if s >= first_due]
    assert c.nodelists[0].next_reap == pytest.approx(node_passes[0] + 4000 * ms, abs=ms) or \
        c.nodelists[0].next_reap > 8000 * ms
    # a pass finding cache_chain_mutex held is skipped and re-armed 2 s later
    holder_done = []

    def hold(t):
        yield from p.cache_chain_mutex.lock(t)
        yield from t.sleep(4_100 * ms)
        yield from p.cache_chain_mutex.unlock(t)
        holder_done.append(True)

    m.spawn("slabinfo-reader", hold)
    m.run(m.env.now + 5_000 * ms)
    assert holder_done and p.reap_skipped >= 2


def test_item10_drain_array_amounts():
    m, p, c = setup(cpucache_shared=0)
    held: list[int] = []
    run(m, 1, alloc_n(p, c, 120, held))
    run(m, 0, free_all(p, c, held))
    ac = c.array[0]
    l3 = c.nodelists[0]
    assert ac.avail == 120 and not ac.touched
    seen = []

    def drain(t):
        while ac.avail:
            yield from p.drain_array(t, c, l3, ac, False)
            seen.append(ac.avail)

    run(m, 0, drain)
    assert seen == [96, 72, 48, 24, 0]
    run(m, 1, alloc_n(p, c, 10, held))
    run(m, 0, free_all(p, c, held))
    seen.clear()
    run(m, 0, drain)
    assert seen == [5, 2, 1, 0]
    # a touched array loses nothing, only its flag
    run(m, 0, alloc_n(p, c, 30, held))
    run(m, 0, free_all(p, c, held))
    before = ac.avail
    assert ac.touched

    def once(t):
        yield from p.drain_array(t, c, l3, ac, False)

    run(m, 0, once)
    assert ac.avail == before and not ac.touched


def test_item10_11_idle_decay_with_the_reaper():
    """limit 120: a consumer's array (frees never set touched) loses 24 per 2 s pass; the
    480-entry shared array loses 96 per node visit (2.6.17: busy or not); free slabs go
    ceil(free_limit / (5 num)) per visit once free_touched is clear."""
    samples = []
    m2, p2, c2 = setup(cpus=2)
    held2: list[int] = []
    run(m2, 0, alloc_n(p2, c2, 600, held2))
    run(m2, 1, free_all(p2, c2, held2))
    ac, sh = c2.array[1], c2.nodelists[0].shared
    assert ac.avail == 120 and sh.avail == 480
    real2 = p2.cache_reap

    def spy2(t):
        yield from real2(t)
        if t.cpu.id == 1:
            samples.append((t.now // 1_000_000, ac.avail, sh.avail,
                            len(c2.nodelists[0].slabs_free)))

    p2.cache_reap = spy2
    p2.start()
    m2.run(m2.env.now + 40_000_000_000)
    cpu_avail = [s[1] for s in samples]
    assert cpu_avail[:6] == [96, 72, 48, 24, 0, 0]
    # the shared array drains 96 per node-level visit, to empty after five
    shared_levels = sorted({s[2] for s in samples}, reverse=True)
    assert shared_levels == [480, 384, 288, 192, 96, 0]
    # all free slabs are eventually returned: nothing is left cached
    st = p2.stats(c2)
    assert st.objs_cached == 0 and st.slabs == 0
    assert c2.reaped + c2.destroyed == c2.grown
    # free slabs leave at most ceil(free_limit / (5 num)) = ceil(292 / 560) = 1 per visit
    frees = [s[3] for s in samples]
    assert all(a - b <= 1 for a, b in zip(frees, frees[1:], strict=False))


def test_item12_free_limit_churn_under_alternating_bursts():
    m, p, c = setup(cpus=1, cpucache_shared=0)
    l3 = c.nodelists[0]
    grown = []
    for _ in range(4):
        held: list[int] = []
        run(m, 0, alloc_n(p, c, 2000, held))
        run(m, 0, free_all(p, c, held))
        grown.append(c.grown)
        # free objects in slabs never exceed free_limit by a slab or more
        assert l3.free_objects <= l3.free_limit + c.geo.num
    steps = [b - a for a, b in zip(grown, grown[1:], strict=False)]
    assert all(s > 10 for s in steps), steps  # every burst grows again...
    assert c.destroyed >= sum(steps)  # ...what the previous free burst destroyed
    assert c.reaped == 0  # by free_block, not by the reaper
    p.check_invariants()


def test_item14_alien_overflow_and_node_directed_allocation():
    m, p, c = setup(cpus=1, nodes=2)
    held: list[int] = []
    run(m, 0, alloc_n(p, c, 25, held))
    run(m, 1, free_all(p, c, held))
    alien = c.nodelists[1].alien[0]
    assert c.node_frees == 25 and c.node_overflow == 2 and alien.avail == 1
    assert c.nodelists[0].shared.avail == 24 and c.nodelists[0].shared.touched
    assert c.array[1].avail == 0  # CPU 1's array never holds node 0's objects
    p.check_invariants()
    # node-directed allocation of node 0's objects from CPU 1: one list_lock round trip each
    lock = c.nodelists[0].list_lock.stat
    a0 = lock.acquisitions

    def node_alloc(t):
        for _ in range(5):
            held.append((yield from p.alloc_node(t, c, KM_SLEEP, 0)))

    run(m, 1, node_alloc)
    assert c.node_allocs == 5 and lock.acquisitions - a0 == 5
    assert all(c.owner[o].nodeid == 0 for o in held)
    p.check_invariants()


def test_item14_reaper_drains_aliens_round_robin():
    m, p, c = setup(cpus=1, nodes=3)
    held: list[int] = []
    run(m, 0, alloc_n(p, c, 5, held))
    run(m, 1, alloc_n(p, c, 5, held))
    run(m, 2, free_all(p, c, held))
    aliens = c.nodelists[2].alien
    assert aliens[0].avail == 5 and aliens[1].avail == 5
    assert p.reap_node[2] == 0
    p.start()
    m.run(m.env.now + 1_010_000_000)  # CPU 2's first pass (1 s + 6 jiffies)
    assert aliens[0].avail == 0 and aliens[1].avail == 5 and p.reap_node[2] == 1
    m.run(m.env.now + 2_010_000_000)
    assert aliens[1].avail == 0
    p.check_invariants()


def test_patch004_commit_arithmetic_from_the_model_accounting():
    """1024 CPUs x 4-byte pointers x 300 caches x 120 objects ~ 140 MB; 150 caches x 80 ~ 46 MB
    (the commit leaves the 16-byte headers out)."""
    def total(ncaches, limit):
        m = Machine(MachineConfig(nodes=1, cpus_per_node=1))
        p = LinuxSlabPolicy(m, {"percpu_cpu_cache": True, "nr_cpu_ids": 1024,
                                "sizeof_pointer": 4, "cpucache_limit": limit,
                                "cpucache_shared": 0})
        cs = [p.cache_create(CacheSpec(f"c{i}", 64)) for i in range(ncaches)]
        meta = sum(p.stats(c).bytes_meta for c in cs)
        return meta - ncaches * (1024 * 16 + 4)  # headers and the one __percpu pointer

    worst = total(300, 120)
    assert worst == 1024 * 4 * 300 * 120 == 147_456_000
    assert worst / 2**20 == pytest.approx(140.6, abs=0.05)
    normal = total(150, 80)
    assert normal == 49_152_000 and normal / 2**20 == pytest.approx(46.9, abs=0.05)
    # 2.6.17 arrays exist only for online CPUs and round to a kmalloc size class; struct
    # kmem_cache holds the array[NR_CPUS] pointer table (seed 003 371) the patch removes
    m = Machine(MachineConfig(nodes=1, cpus_per_node=4))
    p = LinuxSlabPolicy(m, {"nr_cpu_ids": 1024, "cpucache_shared": 0})
    c = p.cache_create(CacheSpec("c", 64))
    assert p.stats(c).bytes_meta == 4 * 1024 + 8 * 1024  # 24 + 8 x 120 = 984 -> size-1024
    p = LinuxSlabPolicy(m, {"NR_CPUS": 64, "cpucache_shared": 0})
    c = p.cache_create(CacheSpec("c", 64))
    assert p.stats(c).bytes_meta == 4 * 1024 + 8 * 64


def test_slabinfo_statistics_layout_comes_with_the_debug_build():
    """Review item 5 (seed 003 3790 and 126-129): STATS exists only with DEBUG, so the
    (statistics) layout shows a debug cache: red zone and user words (2018-2019, 2086-2100:
    32 + 24 = 56-byte stride, word aligned, 67 per slab) and limit capped at 32 (3640)."""
    m, p, c = setup(STATS=True)
    held: list[int] = []
    run(m, 0, alloc_n(p, c, 100, held))
    lines = p.reports()["slabinfo.txt"].splitlines()
    assert lines[0] == "slabinfo - version: 2.1 (statistics)"
    row = lines[2]
    assert row.startswith("size-32 ")
    head, glob = row.split(" : globalstat ")
    assert head.split()[2:6] == ["134", "56", "67", "1"]  # 2 slabs of 67
    assert head.split(" : tunables ")[1].split()[:3] == ["32", "16", "8"]
    assert "\t\t\t\t" in glob
    assert glob.split(" : cpustat ")[1].split() == [str(c.allochit), str(c.allocmiss),
                                                    str(c.freehit), str(c.freemiss)]


def test_slabinfo_without_stats_is_the_plain_layout():
    """Review item 5 (seed 003 3793): STATS = false prints "slabinfo - version: 2.1" and no
    globalstat or cpustat groups; limit 120 from enable_cpucache."""
    m, p, c = setup()
    held: list[int] = []
    run(m, 0, alloc_n(p, c, 100, held))
    lines = p.reports()["slabinfo.txt"].splitlines()
    assert lines[0] == "slabinfo - version: 2.1"
    assert "globalstat" not in lines[1] and "globalstat" not in lines[2]
    assert lines[2].split()[1:6] == ["112", "112", "32", "112", "1"]
    assert lines[2].split(" : tunables ")[1].split()[:3] == ["120", "60", "8"]


def test_shipped_config_writes_slabinfo_and_spl_serves_kmc_slab_through_it(tmp_path):
    from experiments.cli import main

    out = tmp_path / "ls"
    assert main(["run", "experiments/configs/linux_slab.toml", "--out", str(out),
                 "--no-progress", "--set", "duration='5ms'"]) == 0
    info = (out / "slabinfo.txt").read_text().splitlines()
    assert info[0] == "slabinfo - version: 2.1"
    assert [r.split()[0] for r in info[2:]] == ["size-4096", "size-512", "size-64"]
    # the spl policy's 512-byte cache is KMC_SLAB and, with the backend pinned to linux_slab
    # (the default is slub), runs through the Linux SLAB model
    spl = tmp_path / "spl"
    assert main(["run", "experiments/configs/linux_slab.toml", "--out", str(spl),
                 "--no-progress", "--set", "duration='5ms'", "--set", "policy.name='spl'",
                 "--set", "policy.tunables.kmc_slab_allocator='linux_slab'"]) == 0
    slab = (spl / "spl_slab.txt").read_text()
    row = next(r for r in slab.splitlines() if r.startswith("size-512"))
    assert row.split()[1] == "0x00100"  # KMC_SLAB
    sinfo = (spl / "slabinfo.txt").read_text()
    srow = next(r for r in sinfo.splitlines() if r.startswith("size-512"))
    assert " : tunables   54   27    8 " in srow and " : cpustat " not in srow
    import json
    s = json.loads((spl / "summary.json").read_text())
    assert s["caches"]["size-512"]["skc_linux_alloc"] > 0
