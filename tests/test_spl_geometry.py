"""spl geometry against values computed by hand from spl_slab_size() and spl_magazine_size()
(seed 000): 4 KiB pages, 8-byte alignment, spl_kmem_obj_t = 40 bytes and spl_kmem_slab_t =
64 bytes on 64-bit, 8 objects per slab, 32 MiB maximum slab."""

from __future__ import annotations

import pytest

from policies.spl.geometry import geometry, spl_magazine_size, spl_slab_size

PAGE = 4096


@pytest.mark.parametrize("size, stride, mag, refill", [
    # 512 + 40 = 552 <= PAGE/4 (1024): 256 objects, refill (256 + 1) / 2 = 128
    (512, 552, 256, 128),
    # 4096 + 40 = 4136 > PAGE: 64, refill 32
    (4096, 4136, 64, 32),
    # 16385 rounds to 16392, + 40 = 16432: > PAGE, <= 32 pages: 64, refill 32
    (16 * 1024 + 1, 16432, 64, 32),
    # 131073 -> 131080 + 40 = 131120 > 32 pages (131072): 16, refill 8
    (128 * 1024 + 1, 131120, 16, 8),
    # 1048577 -> 1048584 + 40 = 1048624 > 256 pages (1048576): 4, refill 2
    (1024 * 1024 + 1, 1048624, 4, 2),
])
def test_magazine_size_and_refill(size, stride, mag, refill):
    g = geometry(size, 8, PAGE)
    assert g.obj_stride == stride
    assert (g.mag_size, g.mag_refill) == (mag, refill)


@pytest.mark.parametrize("size, objs, slab", [
    (512, 8, 8 * 552 + 64),                     # 4480 bytes
    (16 * 1024 + 1, 8, 8 * 16432 + 64),         # 131520 bytes
    (1024 * 1024 + 1, 8, 8 * 1048624 + 64),     # 8389056 bytes
    # 8 MiB objects: 8 x 8388648 + 64 exceeds 32 MiB, so (32 MiB - 64) // 8388648 = 3 objects
    (8 * 1024 * 1024, 3, 3 * 8388648 + 64),
])
def test_slab_size_and_objects_per_slab(size, objs, slab):
    assert spl_slab_size(size, 8, 8, 32) == (objs, slab)


def test_object_larger_than_the_maximum_slab_is_enospc():
    with pytest.raises(ValueError):
        spl_slab_size(33 * 1024 * 1024, 8, 8, 32)


def test_magazine_size_override_is_clamped_to_2_256():
    assert spl_magazine_size(512, 8, PAGE, override=1) == 2
    assert spl_magazine_size(512, 8, PAGE, override=300) == 256
    assert spl_magazine_size(1 << 20, 8, PAGE, override=10) == 10


def test_alignment_rounds_object_and_trailer():
    # 100 bytes aligned to 64: 128 + roundup(40, 64) = 192; header roundup(64, 64) = 64
    g = geometry(100, 64, PAGE)
    assert (g.obj_stride, g.sks_size, g.slab_size) == (192, 64, 8 * 192 + 64)
