"""linux_slab: one test per finding of the fidelity review (reference/fidelity-review.md, Linux
SLAB items 2-6; item 1 is in test_linux_slab_geometry.py, item 5 in test_linux_slab.py, the
hotplug and retune parts of item 6 in test_linux_slab_hotplug.py), each asserting what seed
003 (Linux 2.6.17 mm/slab.c) does, with its line numbers."""

from __future__ import annotations

from functools import partial

from simrun import run_on

from policies.base import CacheSpec
from policies.linux_slab import LinuxSlabPolicy
from simcore import Machine, MachineConfig, MemoryConfig
from simcore.flags import KM_SLEEP

run = partial(run_on, span=50_000_000)


def setup(cpus=1, nodes=1, size=32, flags=("SLAB_HWCACHE_ALIGN",), **tun):
    m = Machine(MachineConfig(nodes=nodes, cpus_per_node=cpus),
                memory_config=MemoryConfig(total_bytes=256 << 20))
    p = LinuxSlabPolicy(m, tun)
    c = p.cache_create(CacheSpec(f"size-{size}", size, flags=tuple(flags)))
    return m, p, c


def alloc_n(p, c, n, out):
    def body(t):
        for _ in range(n):
            out.append((yield from p.alloc(t, c, KM_SLEEP)))
    return body


def free_n(p, c, objs, n):
    def body(t):
        for _ in range(n):
            yield from p.free(t, c, objs.pop())
    return body


def test_item2_next_reap_node_cycles_through_the_local_node():
    """next_reap_node (846-860): next_node(node) wrapping to first_node, with no skip of
    numa_node_id(); init_reap_node (835-843) starts at the node after the CPU's. On 3 nodes
    CPU 2 (node 2) visits 0, 1, 2, 0, ..."""
    m, p, _c = setup(cpus=1, nodes=3)
    seen = []

    def passes(t):
        for _ in range(4):
            seen.append(p.reap_node[2])
            yield from p.cache_reap(t)
    run(m, 2, passes)
    assert seen == [0, 1, 2, 0]


def test_item3_kmem_cache_shrink_does_not_take_cache_chain_mutex():
    """kmem_cache_shrink (2306-2311) calls __cache_shrink directly: a shrink finishes while
    another thread holds cache_chain_mutex."""
    m, p, c = setup(cpus=2)
    held: list[int] = []
    run(m, 0, alloc_n(p, c, 50, held))
    run(m, 0, free_n(p, c, held, 50))
    done = []

    def holder(t):
        yield from p.cache_chain_mutex.lock(t)
        yield from t.sleep(20_000_000)
        yield from p.cache_chain_mutex.unlock(t)

    def shrinker(t):
        yield from t.sleep(1_000)
        yield from p.reap(t, c)
        done.append(t.now)

    start = m.env.now
    m.spawn("holder", holder, cpu=0)
    m.spawn("shrinker", shrinker, cpu=1)
    m.run(start + 10_000_000)
    assert done and done[0] < start + 10_000_000
    assert p.stats(c).slabs == 0


def test_item4_alien_drain_touches_the_remote_shared_array_only_when_it_moved_objects():
    """__drain_alien_cache (973-992) calls transfer_objects, which marks the destination
    touched after moving nr > 0 objects (913-929): into a full shared array nothing moves, it
    stays untouched and the alien objects go to free_block."""
    m, p, c = setup(cpus=1, nodes=2, cpucache_shared=1)
    held: list[int] = []
    run(m, 0, alloc_n(p, c, 213, held))
    local = held[13:]
    remote = held[:13]
    run(m, 0, free_n(p, c, local, 200))
    shared = c.nodelists[0].shared
    assert shared.avail == shared.limit == 60
    shared.touched = False
    run(m, 1, free_n(p, c, remote, 13))  # the 13th free overflows the 12-entry alien array
    assert c.node_overflow == 1
    assert shared.avail == 60 and not shared.touched
    p.check_invariants()


def test_item6_destroy_unlinks_first_and_reports_a_busy_cache():
    """kmem_cache_destroy (2331-2377): list_del under cache_chain_mutex before __cache_shrink;
    slabs still in use: slab_error "Can't free all objects", list_add back at the head of the
    chain, return 1. An empty cache is freed and 0 returned."""
    m, p, a = setup()
    b = p.cache_create(CacheSpec("b", 64))
    assert p.cache_chain == [b, a]
    held: list[int] = []
    run(m, 0, alloc_n(p, a, 3, held))
    linked_during_shrink = []
    orig = p.drain_cpu_caches

    def watch(t, c):
        linked_during_shrink.append(c in p.cache_chain)
        yield from orig(t, c)
    p.drain_cpu_caches = watch
    rc = []

    def destroy(c):
        def body(t):
            rc.append((yield from p.destroy(t, c)))
        return body
    run(m, 0, destroy(a))
    assert rc == [1] and linked_during_shrink == [False]
    assert p.cache_chain == [a, b] and a in p.caches
    err = [e for e in m.metrics.log.events if e["kind"] == "slab_error"]
    assert len(err) == 1 and err[0]["msg"] == "Can't free all objects"
    run(m, 0, destroy(b))
    assert rc == [1, 0] and p.cache_chain == [a] and b not in p.caches


def test_item6_slab_destroy_by_rcu_frees_pages_after_the_grace_period():
    """slab_destroy (1760-1777): with SLAB_DESTROY_BY_RCU the pages go back in
    kmem_rcu_free after call_rcu's grace period, not in slab_destroy."""
    m, p, c = setup(flags=("SLAB_HWCACHE_ALIGN", "SLAB_DESTROY_BY_RCU"),
                    rcu_grace_period=5_000_000)
    held: list[int] = []
    run(m, 0, alloc_n(p, c, 300, held))
    run(m, 0, free_n(p, c, held, 300))
    slabs = p.stats(c).slabs
    free_before = m.memory.free
    t0 = m.env.now

    def shrink(t):
        yield from p.reap(t, c)
    m.spawn("shrink", shrink, cpu=0)
    m.run(t0 + 1_000_000)
    st = p.stats(c)
    assert st.slabs == 0 and c.rcu_pending == slabs and m.memory.free == free_before
    assert st.bytes_slab == slabs * 4096  # the pages are still the cache's
    m.run(t0 + 7_000_000)
    assert c.rcu_pending == 0 and c.rcu_freed == slabs
    assert m.memory.free == free_before + slabs


def test_item6_alternate_node_alloc_spreads_slab_mem_spread_caches():
    """____cache_alloc (2908-2913) -> alternate_node_alloc (2952-2966): a PF_SPREAD_SLAB task
    allocating from a SLAB_MEM_SPREAD cache takes the cpuset rotor's node; a remote node is
    served by __cache_alloc_node (node_allocs), the local one by the array."""
    def owners(flags, spread):
        m, p, c = setup(cpus=1, nodes=2, flags=flags, cpuset_memory_spread_slab=spread)
        held: list[int] = []
        run(m, 0, alloc_n(p, c, 4, held))
        return [c.owner[o].nodeid for o in held], c.node_allocs

    assert owners(("SLAB_MEM_SPREAD",), True) == ([1, 0, 1, 0], 2)
    assert owners((), True) == ([0, 0, 0, 0], 0)
    assert owners(("SLAB_MEM_SPREAD",), False) == ([0, 0, 0, 0], 0)


def test_item6_patch004_removes_the_array_nr_cpus_table():
    """struct kmem_cache's `array[NR_CPUS]` (seed 003 371) is one pointer per CPU of the
    build; patch 004 replaces it by a __percpu pointer."""
    m = Machine(MachineConfig(nodes=1, cpus_per_node=2))
    before = LinuxSlabPolicy(m, {"NR_CPUS": 256, "cpucache_shared": 0})
    after = LinuxSlabPolicy(m, {"NR_CPUS": 256, "percpu_cpu_cache": True,
                                "cpucache_shared": 0})
    cb = before.cache_create(CacheSpec("c", 64))
    ca = after.cache_create(CacheSpec("c", 64))
    # limit 120: 2.6.17 arrays 24 + 960 -> size-1024 each; 004 arrays 16 + 960 each
    assert before.stats(cb).bytes_meta == 2 * 1024 + 256 * 8
    assert after.stats(ca).bytes_meta == 2 * (16 + 960) + 8


def test_item7_next_reap_counts_from_creation_time():
    """set_up_list3s / alloc_kmemlist (1789-1791, 3506-3507): next_reap = jiffies +
    REAPTIMEOUT_LIST3 + (cachep % REAPTIMEOUT_LIST3), from the moment the cache is created."""
    m = Machine(MachineConfig(nodes=1, cpus_per_node=1))
    p = LinuxSlabPolicy(m)
    early = p.cache_create(CacheSpec("size-64", 64))
    m.run(5_000_000_000)
    # the same name on a second policy instance: the same stand-in for the address
    late = LinuxSlabPolicy(m).cache_create(CacheSpec("size-64", 64))
    offset = early.nodelists[0].next_reap - 4_000_000_000
    assert 0 <= offset < 4_000_000_000
    assert late.nodelists[0].next_reap == 5_000_000_000 + 4_000_000_000 + offset


def test_item7_shared_array_follows_config_smp_not_the_cpu_count():
    """enable_cpucache (3634): the shared factor 8 is compiled in with CONFIG_SMP, also when
    the kernel runs on one CPU."""
    m = Machine(MachineConfig(nodes=1, cpus_per_node=1))
    assert LinuxSlabPolicy(m).cache_create(CacheSpec("c", 64)).shared == 8
    up = LinuxSlabPolicy(m, {"CONFIG_SMP": False}).cache_create(CacheSpec("c", 64))
    assert up.shared == 0 and up.nodelists[0].shared is None


def test_item7_32_bit_arrays_use_the_32_bit_header():
    """struct array_cache on 32-bit: four ints and a 4-byte lock, 20 bytes, before 4-byte
    entries: limit 120 -> 20 + 480 = 500 -> size-512 (64-bit: 24 + 960 -> size-1024)."""
    from policies.linux_slab.geometry import cpu_array_bytes

    assert cpu_array_bytes(120, False, 4) == 512
    assert cpu_array_bytes(120, False, 8) == 1024
