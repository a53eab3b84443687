"""solaris: one test per finding of the fidelity review (reference/fidelity-review.md, illumos
items 4-6; items 1-3 belong to other work), each asserting what seed 002 (illumos kmem.c) and
the vmem design it relies on do, with line numbers; and ::kmastat against the mdb layout named
in policies/solaris/kmastat.py's header (acceptance 4)."""

from __future__ import annotations

import re
from functools import partial

from simrun import run_on

from policies.base import CacheSpec
from policies.solaris import SolarisPolicy
from simcore import Machine, MachineConfig, MemoryConfig
from simcore.flags import KM_NOSLEEP, KM_SLEEP

_run = partial(run_on, span=50_000_000)


def _setup(cpus=1, memory=256 << 20):
    m = Machine(MachineConfig(nodes=1, cpus_per_node=cpus),
                memory_config=MemoryConfig(total_bytes=memory, watermark_min=0.0,
                                           watermark_low=0.0, watermark_high=0.0))
    return m, SolarisPolicy(m)


def test_item4_arena_tree_and_quantum_caches():
    """kmem_init / kmem_cache_init (L3748-3762, L3849-3855): heap -> kmem_metadata ->
    kmem_msb and heap -> kmem_va (qcache_max 8 pages) -> kmem_default; kmem_va's quantum caches
    kmem_va_4096 .. kmem_va_32768 with VMEM_QCACHE_SLABSIZE(32 KiB) = 1 << highbit(96 KiB) =
    128 KiB slabs (L3417-3418)."""
    _m, p = _setup()
    assert [(d, a.name) for d, a in p.vmem_tree()] == [
        (0, "heap"), (1, "kmem_metadata"), (2, "kmem_msb"), (1, "kmem_va"),
        (2, "kmem_default")]
    qc = p.vmem["kmem_va"].qcache
    assert [c.name for c in qc] == [f"kmem_va_{4096 * i}" for i in range(1, 9)]
    assert all(c.slabsize == 131072 and c.geo.hashed and c.geo.notouch for c in qc)


def test_item4_a_slab_travels_through_the_arenas():
    """A kmem_default slab of one page: vmem_alloc(kmem_default) imports (segkmem_alloc)
    4 KiB of kmem_va space, which is a kmem_va_4096 buffer; that quantum cache's first slab is
    a 128 KiB vmem_xalloc from kmem_va, imported from heap. Freeing the slab gives the span
    back (kmem_default total returns to 0), the address goes back to the quantum cache."""
    m, p = _setup()
    c = p.cache_create(CacheSpec("c64", 64))
    held: list[int] = []

    def one(t):
        held.append((yield from p.alloc(t, c, KM_SLEEP)))
    _run(m, 0, one)
    d, va, heap = p.vmem["kmem_default"], p.vmem["kmem_va"], p.vmem["heap"]
    assert (d.vk_mem_inuse, d.vk_mem_total, d.vk_mem_import, d.vk_alloc) == (4096,) * 3 + (1,)
    assert (va.vk_mem_inuse, va.vk_mem_import) == (131072, 131072)
    q = p.vmem["kmem_va"].qcache[0]
    assert q.inuse == 1 and q.cache_slab_create == 1
    # the quantum cache's slab is hashed: its 32 bufctls and its header are buffers of
    # kmem's own caches (L1546, L1566)
    assert p.kmem_bufctl_cache.inuse == 32 and p.kmem_slab_cache.inuse == 1
    assert heap.vk_mem_inuse == va.vk_mem_total + p.vmem["kmem_metadata"].vk_mem_total

    def shrink(t):
        yield from p.free(t, c, held.pop())
        yield from p.kmem_cache_reap_now(t, c)
        yield from p.kmem_cache_magazine_purge(t, c)
    _run(m, 0, shrink)
    assert c.cache_slab_destroy == 1
    assert (d.vk_mem_inuse, d.vk_mem_total, d.vk_free) == (0, 0, 1)
    assert q.inuse == 0  # the kmem_va address is back in kmem_va_4096
    p.check_invariants()


def test_item4_kmem_alloc_classes_have_their_real_alignment():
    """kmem_alloc_caches_create (L3699-3702): a multiple of 64 is 64-aligned, a multiple of
    PAGESIZE page-aligned; an experiment cache named kmem_alloc_128 is that class."""
    _m, p = _setup()
    assert p.kmem_alloc_table[128].align == 64
    assert p.kmem_alloc_table[24].align == 8
    assert p.kmem_alloc_table[8192].align == 4096
    c = p.cache_create(CacheSpec("kmem_alloc_128", 128))
    assert c is p.kmem_alloc_table[128] and c.align == 64
    assert p.kmem_alloc_class(129).name == "kmem_alloc_160"
    assert p.kmem_alloc_class(4097).name == "kmem_alloc_8192"


def test_item4_nosleep_bufctl_failure_unwinds_the_slab():
    """kmem_slab_create's bufctl_alloc_failure (L1599-1614): with kmem_bufctl_cache empty and
    no page for it, a KM_NOSLEEP allocation from a hashed cache (1024 B chunks, one page, 4
    per slab) gets its slab's page and header, fails on the first bufctl, frees the header,
    the page and the address, and counts cache_alloc_fail."""
    m, p = _setup()
    c = p.cache_create(CacheSpec("c1024", 1024))
    assert c.geo.hashed and c.slabsize == 4096
    held: list[int] = []
    bufctls: list[int] = []

    def warm(t):
        for _ in range(4):
            held.append((yield from p.alloc(t, c, KM_SLEEP)))
        bc = p.kmem_bufctl_cache
        while bc.cache_buftotal - bc.inuse:
            bufctls.append((yield from p.kmem_cache_alloc(t, bc, KM_SLEEP)))
    _run(m, 0, warm)
    m.memory.reserve(m.memory.free - 1)  # one page left: exactly the next c1024 slab
    inuse_va = p.vmem["kmem_va"].vk_mem_inuse
    msb = p.vmem["kmem_msb"]
    msb_before = msb.vk_mem_inuse
    got = []

    def try_one(t):
        got.append((yield from p.alloc(t, c, KM_NOSLEEP)))
    _run(m, 0, try_one)
    assert got == [None]
    assert c.cache_alloc_fail == 1 and p.kmem_bufctl_cache.cache_alloc_fail >= 1
    fails = [e for e in m.metrics.log.events if e["kind"] == "alloc_fail"
             and e.get("cache") == "c1024"]
    assert fails[-1]["where"] == "kmem_slab_create:kmem_bufctl_cache"
    # the page came back; the frees of the header and of the kmem_va address may take it for
    # a KM_NOSLEEP magazine (kmem_msb), as on the real system
    assert m.memory.free + (msb.vk_mem_inuse - msb_before) // 4096 == 1
    assert c.cache_slab_create == 1
    assert p.vmem["kmem_default"].vk_mem_inuse == 4096
    assert p.vmem["kmem_va"].vk_mem_inuse == inuse_va
    p.check_invariants()


def test_item6_kmem_reap_start_dispatches_under_kmem_cache_lock():
    """kmem_reap_start -> kmem_cache_applyall (L1204-1216) holds kmem_cache_lock while it
    dispatches; kmem_reap_common (L2696) returns at once when the caller holds the lock."""
    m, p = _setup(cpus=2)
    p.cache_create(CacheSpec("c64", 64))
    times = {}

    def holder(t):
        yield from p.kmem_cache_lock.lock(t)
        yield from p.kmem_reap(t)  # MUTEX_HELD: nothing happens
        assert p.kmem_reap_passes == 0 and not p.reaping["kmem_reaping"]
        yield from t.sleep(5_000_000)
        times["release"] = t.now
        yield from p.kmem_cache_lock.unlock(t)

    def reaper(t):
        yield from t.sleep(1_000_000)
        yield from p.kmem_reap(t)

    m.spawn("holder", holder, cpu=0)
    m.spawn("reaper", reaper, cpu=1)
    m.run(m.env.now + 20_000_000)
    reap = [e for e in m.metrics.log.events if e["kind"] == "reap"
            and e.get("why") == "kmem_reaping"]
    assert len(reap) == 1 and reap[0]["time_ns"] >= times["release"]
    assert reap[0]["caches"] == len(p.kmem_caches)


def test_item6_kmem_reap_idspace_reaps_identifier_caches_on_its_own_flag():
    """kmem_reap_idspace (L2727) -> kmem_reap_start with kmem_reaping_idspace: only
    KMC_IDENTIFIER caches (kmem_cache_applyall_id, L1220-1235), throttled by its own flag."""
    m, p = _setup()
    ident = p.cache_create(CacheSpec("ids", 64, flags=("KMC_IDENTIFIER",)))
    plain = p.cache_create(CacheSpec("plain", 64))

    def go(t):
        yield from p.kmem_reap_idspace(t)
        yield from t.sleep(1_000_000)
        yield from p.kmem_reap_idspace(t)  # cooling down: ignored
        yield from p.kmem_reap(t)  # the other flag: runs
        yield from t.sleep(1_000_000)
    _run(m, 0, go)
    assert p.reaping == {"kmem_reaping": True, "kmem_reaping_idspace": True}
    assert ident.reaps == 2 and plain.reaps == 1
    passes = [e["caches"] for e in m.metrics.log.events if e["kind"] == "reap"
              and "why" in e and e["why"].startswith("kmem_reaping")]
    assert passes == [1, len(p.kmem_caches)]


ROW = re.compile(r"^(.{25}) ([ \d]{6}) ([ \d]{6}) ([ \d]{6}) ([ \d]{10})B ([ \d]{9}) ([ \d]{5}) $")
TOTAL = re.compile(r"^Total \[(\S+)\] +([ \d]{10})B ([ \d]{9}) ([ \d]{5})$")
VROW = re.compile(r"^( *)(\S+) +([ \d]{9})B ([ \d]{10})B ([ \d]{9})B ([ \d]{9}) ([ \d]{5}) $")


def test_kmastat_of_a_run_matches_the_mdb_layout_with_arena_totals(tmp_path):
    """Acceptance 4: kmastat.txt of the shipped solaris experiment in mdb's kmastat layout
    (kmemfmt/vmemfmt, B suffix, dash rules after the cache rows, after the Total lines and at
    the end, Total lines only for arenas with allocations); kmem's own caches are rows; the
    Total memory of an arena is the sum of its caches' rows; a segkmem arena's vmem in-use
    equals its Total (one segment per slab); heap's in-use is what its children imported."""
    from experiments.cli import main

    out = tmp_path / "sol"
    assert main(["run", "experiments/configs/solaris.toml", "--out", str(out), "--no-progress",
                 "--set", "duration='5ms'"]) == 0
    lines = (out / "kmastat.txt").read_text().split("\n")
    assert lines[0] == ("cache                     " "   buf    buf    buf    memory "
                        "    alloc alloc ")
    assert lines[1] == ("name                      " "  size in use  total    in use "
                        "  succeed  fail ")
    rule = "------------------------- ------ ------ ------ ---------- --------- ----- "
    assert lines[2] == rule
    end = lines.index(rule, 3)
    rows = [ROW.match(r) for r in lines[3:end]]
    assert all(rows)
    names = [r.group(1).strip() for r in rows]
    for n in ("kmem_magazine_15", "kmem_slab_cache", "kmem_bufctl_cache", "kmem_va_4096",
              "kmem_alloc_128", "buf_512", "buf_4096"):
        assert n in names
    tend = lines.index(rule, end + 1)
    totals = {m.group(1): int(m.group(2)) for m in map(TOTAL.match, lines[end + 1:tend])}
    assert set(totals) == {"kmem_msb", "kmem_va", "kmem_default"}  # heap has no caches
    arena_of = {"kmem_magazine": "kmem_msb", "kmem_slab_cache": "kmem_msb",
                "kmem_bufctl_cache": "kmem_msb", "kmem_va_": "kmem_va"}
    sums: dict[str, int] = {}
    for r in rows:
        name = r.group(1).strip()
        arena = next((a for k, a in arena_of.items() if name.startswith(k)), "kmem_default")
        sums[arena] = sums.get(arena, 0) + int(r.group(5))
    assert {a: sums[a] for a in totals} == totals
    assert lines[tend + 1] == ""
    assert lines[tend + 2].startswith("vmem                      ")
    vrule = "------------------------- ---------- ----------- ---------- --------- ----- "
    assert lines[tend + 4] == vrule and lines[-2] == vrule and lines[-1] == ""
    vrows = {m.group(2): (len(m.group(1)), int(m.group(3)), int(m.group(4)), int(m.group(5)))
             for m in map(VROW.match, lines[tend + 5:-2])}
    assert [(k, v[0]) for k, v in vrows.items()] == [
        ("heap", 0), ("kmem_metadata", 4), ("kmem_msb", 8), ("kmem_va", 4),
        ("kmem_default", 8)]
    assert vrows["kmem_default"][1] == totals["kmem_default"]
    assert vrows["kmem_msb"][1] == totals["kmem_msb"]
    assert vrows["kmem_va"][1] == totals["kmem_va"]
    assert vrows["heap"][1] == vrows["kmem_metadata"][2] + vrows["kmem_va"][2]
    # ::vmem (genunix vmem dcmd): the same arenas, names indented 2 per ancestor
    vmem = (out / "vmem.txt").read_text().splitlines()
    assert vmem[0] == ("ADDR             NAME                        INUSE        TOTAL   "
                       "SUCCEED  FAIL")
    got = [(r[17:39].rstrip(), int(r[40:50])) for r in vmem[1:]]
    assert got == [("heap", vrows["heap"][1]), ("  kmem_metadata", vrows["kmem_metadata"][1]),
                   ("    kmem_msb", vrows["kmem_msb"][1]), ("  kmem_va", vrows["kmem_va"][1]),
                   ("    kmem_default", vrows["kmem_default"][1])]


def test_item7_bench_point_runs_one_round_magazines_without_kmem_update():
    """Review item 7: the bench's 32 KiB solaris point keeps the initial magazine type of a
    32 KiB chunk (1 round; kmem_magtype's mt_minbuf rule) because kmem_update (every
    kmem_reap_interval = 15 s, L2958-2970) never runs in its millisecond window; depot
    exchanges stay below one per two operations (docs/performance.md)."""
    from pathlib import Path

    from experiments.bench import BenchPoint, experiment
    from experiments.config import validate
    from experiments.run import build

    sim = build(validate(experiment(BenchPoint("solaris", "steady", 4, 1000), 10**12),
                         Path("bench.toml")))
    p, c, env = sim.policy, sim.caches["bench_32k"], sim.machine.env
    env.run(until=1_000_000)
    k0, o0 = p.stats(c).extra, sum(w.allocs + w.frees for w in sim.workloads)
    env.run(until=3_000_000)
    k1, o1 = p.stats(c).extra, sum(w.allocs + w.frees for w in sim.workloads)
    exchanges = (k1["depot_alloc"] - k0["depot_alloc"]) + (k1["depot_free"] - k0["depot_free"])
    assert k1["magazine_size"] == 1 and p.kmem_updates == 0
    assert 0 < exchanges < (o1 - o0) / 2


def test_item6_kmem_cpu_unconfig_dispatches_under_kmem_cache_lock():
    """kmem_cpu_setup(CPU_UNCONFIG) (L3662-3670): two kmem_cache_applyall passes, each
    holding kmem_cache_lock (L1208-1216) while it queues one task per cache."""
    m, p = _setup(cpus=2)
    done = {}

    def holder(t):
        yield from p.kmem_cache_lock.lock(t)
        yield from t.sleep(3_000_000)
        done["release"] = t.now
        yield from p.kmem_cache_lock.unlock(t)

    def unconfig(t):
        yield from t.sleep(1_000_000)
        yield from p.kmem_cpu_unconfig(t)
        done["queued"] = t.now

    m.spawn("holder", holder, cpu=0)
    m.spawn("unconfig", unconfig, cpu=1)
    m.run(m.env.now + 50_000_000)
    assert done["queued"] >= done["release"]
    assert p.kmem_taskq.completed >= 2 * len(p.kmem_caches)
