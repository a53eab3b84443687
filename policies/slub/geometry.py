"""SLUB cache geometry (linux-6.8-mm-slub.c): object layout, slab order and the per-cache limits.

Models `calculate_sizes` (word alignment, the free pointer moved behind the object when the
cache has a constructor, the stride rounded to the cache's alignment), `calculate_order` with
`calc_slab_order` (slub_min_objects from the CPU count, the 1/16 .. 1/2 waste fractions,
slub_max_order = PAGE_ALLOC_COSTLY_ORDER), `oo_make` / `order_objects`, the min_partial rule of
`kmem_cache_open` and `set_cpu_partial` / `slub_set_cpu_partial`. `calculate_alignment` is the
slab_common.c rule for SLAB_HWCACHE_ALIGN. Figures are for a 64-bit kernel without debugging
(no red zones, poisoning or tracking) and without KASAN.
"""

from __future__ import annotations

from dataclasses import dataclass

WORD = 8
"""sizeof(void *): objects are rounded up to a word (calculate_sizes)."""
ARCH_SLAB_MINALIGN = 8
"""__alignof__(unsigned long long) on x86-64."""
CACHE_LINE = 64
"""cache_line_size() for SLAB_HWCACHE_ALIGN."""
PAGE_ALLOC_COSTLY_ORDER = 3
"""slub_max_order's default (without CONFIG_SLUB_TINY)."""
MAX_PAGE_ORDER = 10
"""Largest buddy order (calculate_order's last resort)."""
MAX_OBJS_PER_PAGE = 32767
"""slab->objects is 15 bits."""
MIN_PARTIAL = 5
MAX_PARTIAL = 10
"""kmem_cache_open clamps min_partial = ilog2(size) / 2 into [MIN_PARTIAL, MAX_PARTIAL]."""


def fls(x: int) -> int:
    """fls: position of the most significant set bit, 1-based (0 for 0)."""
    return x.bit_length()


def get_order(size: int, page_size: int = 4096) -> int:
    """get_order: the smallest order whose 2^order pages hold `size` bytes (size >= 1)."""
    order = 0
    while (page_size << order) < size:
        order += 1
    return order


def order_objects(order: int, size: int, page_size: int = 4096) -> int:
    """order_objects: objects of `size` bytes in a slab of 2^order pages."""
    return (page_size << order) // size


def calculate_alignment(align: int, size: int, hwcache_align: bool) -> int:
    """slab_common.c calculate_alignment: SLAB_HWCACHE_ALIGN halves the cache line while the
    object fits twice; at least ARCH_SLAB_MINALIGN, rounded to a word."""
    if hwcache_align:
        ralign = CACHE_LINE
        while size <= ralign // 2:
            ralign //= 2
        align = max(align, ralign)
    align = max(align, ARCH_SLAB_MINALIGN)
    return -(-align // WORD) * WORD


def calc_slab_order(size: int, min_order: int, max_order: int, fract_leftover: int,
                    page_size: int = 4096) -> int:
    """calc_slab_order: the first order from min_order whose leftover is at most 1/fract of
    the slab; max_order + 1 when none is."""
    order = min_order
    while order <= max_order:
        slab_size = page_size << order
        if slab_size % size <= slab_size // fract_leftover:
            break
        order += 1
    return order


def min_objects_for(nr_cpus: int, nr_cpu_ids: int, slub_min_objects: int = 0) -> int:
    """calculate_order's min_objects: slub_min_objects, else 4 * (fls(present CPUs) + 1),
    using nr_cpu_ids when only one CPU is present."""
    if slub_min_objects:
        return slub_min_objects
    if nr_cpus <= 1:
        nr_cpus = nr_cpu_ids
    return 4 * (fls(nr_cpus) + 1)


def calculate_order(size: int, nr_cpus: int, nr_cpu_ids: int | None = None,
                    slub_min_objects: int = 0, slub_min_order: int = 0,
                    slub_max_order: int = PAGE_ALLOC_COSTLY_ORDER, page_size: int = 4096) -> int:
    """calculate_order: the slab order for objects of stride `size` (ValueError when even
    MAX_PAGE_ORDER cannot hold one)."""
    min_objects = min_objects_for(nr_cpus, nr_cpu_ids if nr_cpu_ids else nr_cpus,
                                  slub_min_objects)
    max_objects = max(order_objects(slub_max_order, size, page_size), 1)
    min_objects = min(min_objects, max_objects)
    min_order = max(slub_min_order, get_order(min_objects * size, page_size))
    if order_objects(min_order, size, page_size) > MAX_OBJS_PER_PAGE:
        return get_order(size * MAX_OBJS_PER_PAGE, page_size) - 1
    fraction = 16
    while fraction > 1:
        order = calc_slab_order(size, min_order, slub_max_order, fraction, page_size)
        if order <= slub_max_order:
            return order
        fraction //= 2
    order = get_order(size, page_size)
    if order <= MAX_PAGE_ORDER:
        return order
    raise ValueError(f"no slab order holds a {size}-byte object")


def min_partial_for(size: int) -> int:
    """kmem_cache_open: min_partial = ilog2(size) / 2 clamped to [MIN_PARTIAL, MAX_PARTIAL]."""
    return max(MIN_PARTIAL, min(MAX_PARTIAL, (size.bit_length() - 1) // 2))


def cpu_partial_objects(size: int, page_size: int = 4096, has_cpu_partial: bool = True) -> int:
    """set_cpu_partial: the cpu_partial object count by object stride."""
    if not has_cpu_partial:
        return 0
    if size >= page_size:
        return 6
    if size >= 1024:
        return 24
    if size >= 256:
        return 52
    return 120


def cpu_partial_slabs_for(nr_objects: int, objs_per_slab: int) -> int:
    """slub_set_cpu_partial: slabs allowed on a cpu partial list, assuming half-full slabs."""
    return -(-(nr_objects * 2) // objs_per_slab)


@dataclass(frozen=True)
class SlubGeometry:
    """What kmem_cache_open / calculate_sizes compute for a cache."""

    object_size: int
    """The size the cache was created with (s->object_size)."""
    size: int
    """Object stride including the relocated free pointer and alignment (s->size)."""
    align: int
    offset: int
    """Free pointer offset in the object (s->offset)."""
    order: int
    """oo_order(s->oo)."""
    objects: int
    """oo_objects(s->oo): objects per slab."""
    min_order: int
    """oo_order(s->min): the fallback order when the preferred one cannot be allocated."""
    min_objects: int
    """oo_objects(s->min)."""
    min_partial: int

    @property
    def pages(self) -> int:
        return 1 << self.order


def geometry(object_size: int, align: int = WORD, hwcache_align: bool = False,
             has_ctor: bool = False, nr_cpus: int = 1, nr_cpu_ids: int | None = None,
             slub_min_objects: int = 0, slub_min_order: int = 0,
             slub_max_order: int = PAGE_ALLOC_COSTLY_ORDER, page_size: int = 4096
             ) -> SlubGeometry:
    """calculate_sizes + calculate_order + kmem_cache_open's min_partial for one cache."""
    if object_size < 1:
        raise ValueError(f"object size {object_size} must be at least 1 byte")
    align = calculate_alignment(align, object_size, hwcache_align)
    size = -(-object_size // WORD) * WORD
    if has_ctor:
        offset = size
        size += WORD
    else:
        offset = (object_size // 2) // WORD * WORD
    size = -(-size // align) * align
    order = calculate_order(size, nr_cpus, nr_cpu_ids, slub_min_objects, slub_min_order,
                            slub_max_order, page_size)
    min_order = get_order(size, page_size)
    return SlubGeometry(object_size, size, align, offset, order,
                        order_objects(order, size, page_size), min_order,
                        order_objects(min_order, size, page_size), min_partial_for(size))
