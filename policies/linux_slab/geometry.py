"""Linux SLAB cache geometry and per-CPU array sizing (seeds/003, Linux 2.6.17 mm/slab.c).

Models `kmem_cache_create`'s alignment and on/off-slab choice, `cache_estimate` and
`calculate_slab_order` (objects per slab, page order, leftover, colouring), `enable_cpucache`'s
default limit / batchcount / shared factor, and the metadata sizes of array caches before and
after the percpu patch (seeds/004). Defaults are for a 64-bit kernel: `struct slab` is 48
bytes (28 with 4-byte words), a bufctl is 4 bytes, a cache line 64 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

SLAB_DESC = 48
"""sizeof(struct slab) on 64-bit (42 rounded up)."""
SLAB_DESC_32 = 28
"""sizeof(struct slab) on 32-bit."""
BUFCTL = 4
"""sizeof(kmem_bufctl_t)."""
WORD = 8
"""BYTES_PER_WORD."""
CACHE_LINE = 64
"""cache_line_size() / L1 line, the colour step."""
MAX_GFP_ORDER = 5
"""Largest slab order on MMU systems (32 pages)."""
SLAB_LIMIT = 0xFFFFFFFF - 3
"""Most objects a slab may hold (bufctl sentinels reserved)."""
MAX_OBJ_SIZE = 4096 << MAX_GFP_ORDER
"""kmem_cache_create rejects larger objects (2^MAX_OBJ_ORDER pages)."""
KMALLOC_SIZES = (32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536,
                 131072)
"""General cache sizes with 4 KiB pages and 64-byte lines (size-96 and size-192 exist because
the line is not larger than 64 bytes, as in kmalloc_sizes.h)."""
ARRAY_HEADER_2617 = 24
"""struct array_cache header in 2.6.17 (avail, limit, batchcount, touched, lock) on 64-bit; 20
on 32-bit (no padding before entry[])."""
ARRAY_HEADER_PERCPU = 16
"""struct array_cache header after patch 004 (four u32; alien lock moved out)."""
ALIEN_LIMIT = 12
"""alloc_alien_cache capacity."""


def align_up(n: int, a: int) -> int:
    return -(-n // a) * a


def kmalloc_size(n: int) -> int:
    """The general cache a kmalloc of `n` bytes lands in (kmem_find_general_cachep)."""
    for s in KMALLOC_SIZES:
        if n <= s:
            return s
    raise ValueError(f"kmalloc of {n} bytes is larger than the largest general cache")


@dataclass(frozen=True)
class SlabGeometry:
    """The shape `kmem_cache_create` computes for a cache."""

    buffer_size: int
    """Object stride after alignment."""
    align: int
    gfporder: int
    num: int
    """Objects per slab."""
    off_slab: bool
    """CFLGS_OFF_SLAB: the descriptor lives in a general cache."""
    slab_size: int
    """Management area: struct slab + bufctl[num] (aligned when on-slab)."""
    colour: int
    """Number of colour offsets."""
    colour_off: int
    """Bytes per colour step."""
    leftover: int
    red_zone: bool = False
    """SLAB_RED_ZONE (DEBUG builds): two guard words around each object."""
    store_user: bool = False
    """SLAB_STORE_USER (DEBUG builds): the last caller's address after the object."""

    @property
    def pages(self) -> int:
        return 1 << self.gfporder


def slab_desc(word: int) -> int:
    """sizeof(struct slab) for BYTES_PER_WORD = `word`."""
    return SLAB_DESC if word == 8 else SLAB_DESC_32


def array_header(word: int) -> int:
    """sizeof(struct array_cache) before entry[] in 2.6.17 for a `word`-byte pointer."""
    return ARRAY_HEADER_2617 if word == 8 else 20


def cache_estimate(order: int, size: int, align: int, on_slab: bool,
                   page_size: int = 4096, desc: int = SLAB_DESC) -> tuple[int, int, int]:
    """cache_estimate: (num, leftover, management bytes) for one slab of 2^order pages, with
    a `desc`-byte struct slab."""
    nbytes = page_size << order
    if not on_slab:
        num = min(nbytes // size, SLAB_LIMIT)
        return num, nbytes - num * size, 0
    num = (nbytes - desc) // (size + BUFCTL)
    if num > 0 and align_up(desc + num * BUFCTL, align) + num * size > nbytes:
        num -= 1
    mgmt = align_up(desc + num * BUFCTL, align) if num > 0 else 0
    return num, nbytes - num * size - mgmt, mgmt


def debug_words(size: int, word: int = WORD) -> bool:
    """kmem_cache_create (seed 003 2018) in a CONFIG_DEBUG_SLAB build: red zone and last-user
    words are added unless they would push a large object past the next power of two."""
    return size < 4096 or (size - 1).bit_length() == (size - 1 + 3 * word).bit_length()


def geometry(size: int, align: int = WORD, hwcache_align: bool = False,
             reclaim_account: bool = False, page_size: int = 4096,
             slab_break_gfp_order: int = 1, debug: bool = False,
             word: int = WORD) -> SlabGeometry:
    """kmem_cache_create + calculate_slab_order: alignment, on/off-slab, order and num.

    In the seed's order: word rounding (2040), the alignment steps 1-3 (2048-2070), in a
    DEBUG build the red zone and user words with word alignment (2086-2100), the off-slab
    test on that size (2112) and only then `size = ALIGN(size, align)` (2119), the order
    search, the move back on-slab when the leftover holds the descriptor (2136) and colouring
    (2147-2151). `word` is BYTES_PER_WORD (8 on 64-bit, 4 on 32-bit, where struct slab is
    28 bytes)."""
    if size < word or size > MAX_OBJ_SIZE:
        raise ValueError(f"object size {size} outside {word}..{MAX_OBJ_SIZE}")
    desc = slab_desc(word)
    red_zone = store_user = debug and debug_words(size, word)
    size = align_up(size, word)
    if hwcache_align:
        ralign = CACHE_LINE
        while size <= ralign // 2:
            ralign //= 2
    else:
        ralign = word
    if ralign < align:
        ralign = align
        if ralign > word:
            red_zone = store_user = False
    if red_zone:
        ralign = word
        size += 2 * word
    if store_user:
        ralign = word
        size += word
    off_slab = size >= page_size >> 3
    size = align_up(size, ralign)
    best: tuple[int, int, int] | None = None
    for order in range(MAX_GFP_ORDER + 1):
        num, left, _mgmt = cache_estimate(order, size, ralign, not off_slab, page_size, desc)
        if num == 0:
            continue
        if off_slab and num > (size - desc) // BUFCTL:
            break
        best = (order, num, left)
        if reclaim_account or order >= slab_break_gfp_order:
            break
        if left * 8 <= page_size << order:
            break
    if best is None:
        raise ValueError(f"no slab order fits a {size}-byte object")
    order, num, left = best
    slab_size = align_up(num * BUFCTL + desc, ralign)
    if off_slab and left >= slab_size:
        off_slab = False
        left -= slab_size
    if off_slab:
        slab_size = num * BUFCTL + desc
    colour_off = max(CACHE_LINE, ralign)
    return SlabGeometry(size, ralign, order, num, off_slab, slab_size, left // colour_off,
                        colour_off, left, red_zone, store_user)


@dataclass(frozen=True)
class CpuCacheTunables:
    """enable_cpucache's choice for a cache."""

    limit: int
    batchcount: int
    shared: int


def enable_cpucache(buffer_size: int, page_size: int = 4096, smp: bool = True,
                    debug: bool = False) -> CpuCacheTunables:
    """enable_cpucache (seed 003 3598): limit by object stride, shared 8 on SMP for objects up
    to a page, limit at most 32 in a DEBUG build (long IRQ-off batches), batchcount =
    (limit + 1) / 2."""
    if buffer_size > 131072:
        limit = 1
    elif buffer_size > page_size:
        limit = 8
    elif buffer_size > 1024:
        limit = 24
    elif buffer_size > 256:
        limit = 54
    else:
        limit = 120
    shared = 8 if smp and buffer_size <= page_size else 0
    if debug and limit > 32:
        limit = 32
    return CpuCacheTunables(limit, (limit + 1) // 2, shared)


def cpu_array_bytes(limit: int, percpu: bool, pointer: int = WORD) -> int:
    """Memory of one per-CPU array_cache: after patch 004 exactly header + pointer x limit
    (percpu allocator, no rounding); in 2.6.17 that rounded up to a kmalloc size class."""
    if percpu:
        return ARRAY_HEADER_PERCPU + pointer * limit
    return kmalloc_size(array_header(pointer) + pointer * limit)
