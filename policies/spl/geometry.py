"""SPL kmem cache geometry: slab size, objects per slab and magazine size, computed as
spl-kmem-cache.c computes them (seed 000; the sizes of the 64-bit structures are those of
include/os/linux/spl/sys/kmem_cache.h).

- `spl_sks_size`: the spl_kmem_slab_t header at the start of every slab, rounded up to the
  object alignment.
- `spl_obj_size`: each object rounded up to the alignment, followed by its spl_kmem_obj_t, also
  rounded up (models spl_obj_size()).
- `spl_slab_size`: target `spl_kmem_cache_obj_per_slab` objects per slab; when that would
  exceed `spl_kmem_cache_max_size` MiB, as many objects as fit in the maximum (models
  spl_slab_size(); -ENOSPC when not even one fits is a ValueError here).
- `spl_magazine_size`: 4 / 16 / 64 / 128 / 256 objects by the object size against the page
  size, or the `spl_kmem_cache_magazine_size` override clamped to 2..256 (models
  spl_magazine_size()); the refill count is (size + 1) / 2 (spl_magazine_create()).
"""

from __future__ import annotations

from dataclasses import dataclass

SPL_KMEM_CACHE_ALIGN = 8
"""Default object alignment (sizeof(void *))."""
SKS_STRUCT_SIZE = 64
"""sizeof(spl_kmem_slab_t) on 64-bit: magic, objs, cache pointer, two list heads, age, ref."""
SKO_STRUCT_SIZE = 40
"""sizeof(spl_kmem_obj_t) on 64-bit: magic, object address, slab pointer, list head."""


def roundup(x: int, align: int) -> int:
    """P2ROUNDUP for a power-of-two alignment."""
    return -(-x // align) * align


def spl_sks_size(align: int) -> int:
    """Bytes taken by the slab header at the start of a slab (models spl_sks_size())."""
    return roundup(SKS_STRUCT_SIZE, align)


def spl_obj_size(obj_size: int, align: int) -> int:
    """Bytes one object takes in a slab, its trailing spl_kmem_obj_t included."""
    return roundup(obj_size, align) + roundup(SKO_STRUCT_SIZE, align)


@dataclass(frozen=True)
class SlabGeometry:
    """What spl_kmem_cache_create() computes for a KMC_KVMEM cache."""

    obj_size: int
    align: int
    sks_size: int
    obj_stride: int
    """spl_obj_size(): object plus its spl_kmem_obj_t."""
    slab_objs: int
    slab_size: int
    mag_size: int
    mag_refill: int


def spl_slab_size(obj_size: int, align: int, obj_per_slab: int, max_size_mb: int
                  ) -> tuple[int, int]:
    """(objects per slab, slab size in bytes); ValueError when no object fits (-ENOSPC)."""
    sks = spl_sks_size(align)
    stride = spl_obj_size(obj_size, align)
    max_size = max_size_mb * 1024 * 1024
    tgt_size = obj_per_slab * stride + sks
    if tgt_size <= max_size:
        tgt_objs = (tgt_size - sks) // stride
    else:
        tgt_objs = (max_size - sks) // stride
        tgt_size = tgt_objs * stride + sks
    if tgt_objs == 0:
        raise ValueError(f"object of {obj_size} bytes does not fit a {max_size_mb} MiB slab")
    return tgt_objs, tgt_size


def spl_magazine_size(obj_size: int, align: int, page_size: int, override: int = 0) -> int:
    """Objects per per-CPU magazine."""
    if override > 0:
        return max(min(override, 256), 2)
    stride = spl_obj_size(obj_size, align)
    if stride > page_size * 256:
        return 4
    if stride > page_size * 32:
        return 16
    if stride > page_size:
        return 64
    if stride > page_size // 4:
        return 128
    return 256


def geometry(obj_size: int, align: int, page_size: int, obj_per_slab: int = 8,
             max_size_mb: int = 32, magazine_override: int = 0) -> SlabGeometry:
    """The whole geometry of a KMC_KVMEM cache."""
    objs, size = spl_slab_size(obj_size, align, obj_per_slab, max_size_mb)
    mag = spl_magazine_size(obj_size, align, page_size, magazine_override)
    return SlabGeometry(obj_size, align, spl_sks_size(align), spl_obj_size(obj_size, align),
                        objs, size, mag, (mag + 1) // 2)
