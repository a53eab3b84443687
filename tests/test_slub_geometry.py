"""slub acceptance 1: geometry for object sizes 8..8192 on 1, 4, 64 and 1024 CPUs equals a
derivation written here from seed linux-6.8-mm-slub.c: calculate_order / calc_slab_order
(with slub_min_objects = 4 * (fls(nr_cpus) + 1), slub_max_order = PAGE_ALLOC_COSTLY_ORDER =
3, the 1/16, 1/8, 1/4, 1/2 waste fractions), calculate_sizes (word rounding, free pointer
behind the object for caches with a constructor), kmem_cache_open's min_partial and
set_cpu_partial / slub_set_cpu_partial; plus values read on real machines."""

from __future__ import annotations

import math

import pytest

from policies.base import CacheSpec
from policies.slub import SlubPolicy
from policies.slub.geometry import geometry
from simcore import Machine, MachineConfig

PAGE = 4096
CPUS = (1, 4, 64, 1024)


def derive(object_size: int, cpus: int, ctor: bool = False) -> tuple[int, int, int, int, int]:
    """(order, objs_per_slab, min_partial, cpu_partial, cpu_partial_slabs), derived from the
    seed's rules without the model's code."""
    stride = math.ceil(object_size / 8) * 8 + (8 if ctor else 0)
    # calculate_order: min_objects from the CPU count (nr_cpu_ids = cpus here)
    min_objects = 4 * (cpus.bit_length() + 1)
    max_objects = max((PAGE << 3) // stride, 1)
    want = min(min_objects, max_objects)
    first = max(0, math.ceil(math.log2(math.ceil(want * stride / PAGE))))
    order = None
    if (PAGE << first) // stride > 32767:
        order = math.ceil(math.log2(stride * 32767 / PAGE)) - 1
    for fraction in (16, 8, 4, 2):
        if order is not None:
            break
        fits = [o for o in range(first, 4) if ((PAGE << o) % stride) * fraction <= PAGE << o]
        if fits:
            order = fits[0]
    if order is None:
        order = max(0, math.ceil(math.log2(stride / PAGE)))
    objs = (PAGE << order) // stride
    # kmem_cache_open: ilog2(size) / 2 within [MIN_PARTIAL = 5, MAX_PARTIAL = 10]
    min_partial = min(10, max(5, int(math.log2(stride)) // 2))
    # set_cpu_partial by s->size; slub_set_cpu_partial assumes half-full slabs
    cpu_partial = 6 if stride >= PAGE else 24 if stride >= 1024 else 52 if stride >= 256 else 120
    return order, objs, min_partial, cpu_partial, math.ceil(2 * cpu_partial / objs)


@pytest.mark.parametrize("cpus", CPUS)
def test_calculate_order_min_partial_cpu_partial_for_every_size(cpus):
    for size in [*range(8, 8193, 8), 13, 100, 1000, 1500, 3000, 5000, 8190]:
        for ctor in (False, True):
            g = geometry(size, has_ctor=ctor, nr_cpus=cpus, nr_cpu_ids=cpus)
            order, objs, min_partial, cpu_partial, slabs = derive(size, cpus, ctor)
            assert (g.order, g.objects, g.min_partial) == (order, objs, min_partial), (size, ctor)
            assert g.min_order == max(0, math.ceil(math.log2(g.size / PAGE)))


@pytest.mark.parametrize("cpus", CPUS)
def test_the_policy_sets_cpu_partial_and_cpu_partial_slabs(cpus):
    m = Machine(MachineConfig(cpus_per_node=cpus))
    p = SlubPolicy(m, {})
    for size in (8, 24, 96, 200, 256, 512, 1000, 1024, 2048, 4000, 4096, 8192):
        s = p.cache_create(CacheSpec(f"c{size}", size))
        order, objs, min_partial, cpu_partial, slabs = derive(size, cpus)
        assert (s.geo.order, s.geo.objects, s.min_partial) == (order, objs, min_partial)
        assert (s.cpu_partial, s.cpu_partial_slabs) == (cpu_partial, slabs)


@pytest.mark.parametrize("name,size,cpus,order,objs", [
    # /proc/slabinfo of real x86-64 machines (objperslab, pagesperslab = 2^order)
    ("kmalloc-8", 8, 64, 0, 512),
    ("kmalloc-192", 192, 16, 1, 42),
    ("kmalloc-512", 512, 16, 2, 32),
    ("kmalloc-1k", 1024, 64, 3, 32),
    ("kmalloc-4k", 4096, 8, 3, 8),
    ("kmalloc-8k", 8192, 8, 3, 4),
])
def test_known_kmalloc_geometry(name, size, cpus, order, objs):
    g = geometry(size, nr_cpus=cpus)
    assert (g.order, g.objects) == (order, objs), name


def test_one_present_cpu_uses_nr_cpu_ids_and_boot_parameters_apply():
    assert geometry(512, nr_cpus=1, nr_cpu_ids=64).order == derive(512, 64)[0]
    assert geometry(512, nr_cpus=4, slub_min_objects=4).order == 0
    assert geometry(64, nr_cpus=4, slub_min_order=2).order == 2
    assert geometry(4096, nr_cpus=64, slub_max_order=0).order == 0


def test_hwcache_align_and_constructor_layout():
    g = geometry(100, hwcache_align=True, nr_cpus=4)
    assert (g.align, g.size) == (64, 128)
    g = geometry(24, hwcache_align=True, nr_cpus=4)
    assert (g.align, g.size) == (32, 32)
    g = geometry(64, has_ctor=True, nr_cpus=4)
    assert (g.offset, g.size) == (64, 72)
    assert geometry(64, nr_cpus=4).offset == 32
