"""solaris: slab geometry and magazine sizing against the worked table of
reference/solaris-kmem.md 1.5 (kmem_cache_create, seeds/002 L3356-3437, L3466) and the
magazine-type rules of 1.3."""

from __future__ import annotations

import pytest

from policies.base import CacheSpec
from policies.solaris import SolarisPolicy
from policies.solaris.magazine import KMEM_MAGTYPE_TABLE, max_magtype_index
from simcore import Machine, MachineConfig, MemoryConfig
from simcore.flags import KM_SLEEP


def _policy(page: int = 4096) -> tuple[Machine, SolarisPolicy]:
    m = Machine(MachineConfig(nodes=1, cpus_per_node=2),
                memory_config=MemoryConfig(total_bytes=64 << 20, page_size=page))
    return m, SolarisPolicy(m)


def _kmem_alloc_align(size: int, page: int) -> int:
    """kmem_alloc caches: 64 for multiples of 64, PAGESIZE for multiples of it, else 8."""
    if size % page == 0:
        return page
    return 64 if size % 64 == 0 else 8


# bufsize: (slabsize, buffers per slab, hashed, binshift, magazine start, magazine max)
TABLE_4K = {
    8: (4096, 503, False, 7, 15, 143),
    64: (4096, 62, False, 4, 15, 143),
    128: (4096, 31, False, 3, 7, 143),
    256: (4096, 15, False, 2, 7, 143),
    512: (4096, 8, True, 1, 3, 95),
    1152: (8192, 7, True, 1, 3, 63),
    2048: (4096, 2, True, 1, 3, 47),
    4096: (4096, 1, True, 1, 1, 31),
    12288: (12288, 1, True, 1, 1, 15),
}
TABLE_8K = {
    8: (8192, 1015, False, 8),
    64: (8192, 126, False, 5),
    128: (8192, 63, False, 4),
    256: (8192, 31, False, 3),
    512: (8192, 15, False, 2),
    1152: (8192, 7, True, 1),
    2048: (8192, 4, True, 1),
    4096: (8192, 2, True, 1),
    12288: (24576, 2, True, 1),
}


@pytest.mark.parametrize("size", sorted(TABLE_4K))
def test_worked_table_4k_pages(size):
    m, p = _policy(4096)
    c = p.cache_create(CacheSpec(f"kmem_alloc_{size}", size, _kmem_alloc_align(size, 4096)))
    slab, bufs, hashed, binshift, mag0, magmax = TABLE_4K[size]
    assert (c.slabsize, c.geo.chunks(0), c.geo.hashed, c.geo.binshift) == (
        slab, bufs, hashed, binshift)
    assert c.cache_magtype.mt_magsize == mag0
    assert KMEM_MAGTYPE_TABLE[max_magtype_index(c.chunksize)][0] == magmax
    assert (c.hash is not None) == hashed


@pytest.mark.parametrize("size", sorted(TABLE_8K))
def test_worked_table_8k_pages(size):
    m, p = _policy(8192)
    c = p.cache_create(CacheSpec(f"kmem_alloc_{size}", size, _kmem_alloc_align(size, 8192)))
    assert (c.slabsize, c.geo.chunks(0), c.geo.hashed, c.geo.binshift) == TABLE_8K[size]


def test_first_slab_holds_the_table_count_and_hands_out_the_highest_buffer_first():
    m, p = _policy()
    c = p.cache_create(CacheSpec("kmem_alloc_64", 64, 64))
    got = []

    def body(t):
        got.append((yield from p.alloc(t, c, KM_SLEEP)))
        got.append((yield from p.alloc(t, c, KM_SLEEP)))

    m.spawn("t", body, cpu=0)
    m.run(1_000_000)
    (sp,) = c.partial.slabs
    # colour: 0 + align 64 > maxcolor (4024 % 64 = 56) wraps to mincolor 0
    assert sp.base == sp.mem and sp.chunks == 62
    # the free stack is pushed in address order: the highest buffer comes out first
    assert got == [sp.mem + 61 * 64, sp.mem + 60 * 64]


def test_slab_colouring_advances_by_align_and_wraps():
    m, p = _policy()
    # chunk 200, embedded, maxcolor = (4096 - 72) % 200 = 24: colours 8, 16, 24, 0, 8
    c = p.cache_create(CacheSpec("c200", 200, 8, flags=("KMC_NOMAGAZINE",)))
    assert c.geo.maxcolor == 24

    def body(t):
        for _ in range(5 * 20):
            yield from p.alloc(t, c, KM_SLEEP)

    m.spawn("t", body, cpu=0)
    m.run(10_000_000)
    slabs = sorted(c.complete, key=lambda s: s.mem)
    assert [s.base - s.mem for s in slabs] == [8, 16, 24, 0, 8]
    assert [s.chunks for s in slabs] == [20] * 5


def test_hashed_slab_size_search_skips_ahead_like_the_seed():
    # chunk 5000: k=1 gives 8192 (waste 3192); the loop variable is reset to 8192/5000 = 1,
    # k=2 gives 12288 with 2 chunks (waste 1144 each), k=3: 16384 / 3 chunks (461), k=4:
    # 20480 / 4 (20), k=5: 28672 / 5 (734), k=6: 32768 / 6 (461), k=7: 36864 / 7 (266),
    # k=8: 40960 / 8 (120): the first strictly smallest waste is 20480
    m, p = _policy()
    c = p.cache_create(CacheSpec("c5000", 5000, 8))
    assert (c.slabsize, c.geo.chunks(0), c.geo.maxcolor) == (20480, 4, 480)


def test_magazine_caches_are_embedded_kmem_caches_with_their_own_magazines():
    m, p = _policy()
    names = [cp.name for cp in p.kmem_caches]
    # kmem_cache_init (L3724-3810): magazines, slab headers, bufctls, then pass 2's kmem_va
    # quantum caches (8 pages) and the kmem_alloc classes (kmem_bufctl_audit_cache is not
    # modelled: kmem_flags = 0)
    small = [8, 16, 24] + [k * u for u in (8, 16, 32, 64, 128) for k in (4, 5, 6, 7)] + [
        8192 // k // 64 * 64 for k in (7, 6, 5, 4, 3, 2)]
    big = [8192, 12288] + [k * 8192 for k in range(2, 17)]
    assert names == ([f"kmem_magazine_{row[0]}" for row in KMEM_MAGTYPE_TABLE]
                     + ["kmem_slab_cache", "kmem_bufctl_cache"]
                     + [f"kmem_va_{4096 * i}" for i in range(1, 9)]
                     + [f"kmem_alloc_{n}" for n in small + big])
    mag15 = p.kmem_magtype[3].mt_cache
    # (15 + 1) pointers = 128 B, NOHASH: embedded even though it needs no touch rules
    assert (mag15.spec.size, mag15.chunksize, mag15.geo.hashed) == (128, 128, False)
    # a 128 B chunk starts at 7-round magazines: kmem_magazine_15 uses kmem_magazine_7
    assert mag15.cache_magtype.mt_magsize == 7
    mag143 = p.kmem_magtype[8].mt_cache
    assert (mag143.chunksize, mag143.geo.hashed, mag143.geo.chunks(0)) == (1152, False, 3)


@pytest.mark.parametrize("chunk,start,cap", [
    (8, 15, 143), (64, 15, 143), (72, 7, 143), (256, 7, 143), (264, 3, 143), (504, 3, 143),
    (512, 3, 95), (1024, 3, 63), (2048, 3, 47), (3200, 3, 47), (3208, 1, 47), (4096, 1, 31),
    (8192, 1, 15), (16384, 1, 7), (32768, 1, 3), (65536, 1, 1)])
def test_initial_and_maximum_magazine_size_by_chunk(chunk, start, cap):
    m, p = _policy()
    c = p.cache_create(CacheSpec(f"c{chunk}", chunk, 8))
    assert c.chunksize == chunk
    assert c.cache_magtype.mt_magsize == start
    assert all(ccp.cc_magsize == start for ccp in c.cache_cpu)
    assert KMEM_MAGTYPE_TABLE[max_magtype_index(chunk)][0] == cap


def test_nomagazine_and_notouch_flags():
    m, p = _policy()
    nm = p.cache_create(CacheSpec("nm", 64, 8, flags=("KMC_NOMAGAZINE",)))
    assert all(ccp.cc_magsize == 0 for ccp in nm.cache_cpu)
    assert p.stats(nm).extra["magazine_size"] == 0
    # align < 8 forces NOTOUCH, which forbids the embedded layout
    nt = p.cache_create(CacheSpec("nt", 64, 4))
    assert nt.geo.notouch and nt.geo.hashed
    with pytest.raises(ValueError):
        p.kmem_cache_set_move(nt, lambda *a: "YES")
