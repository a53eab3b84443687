"""SLUB data structures (linux-6.8-mm-slub.c, with the 6.18 sheaves patch): `struct slab` as
SLUB uses it, `struct kmem_cache_cpu`, `struct kmem_cache_node` and `struct kmem_cache`, and
the CONFIG_SLUB_STATS items by their sysfs names.

Freelists are Python lists used as stacks: the end of the list is the head the kernel's
freelist pointer points at, so `pop()` takes the next object and `extend()` splices a chain in
front of the old head.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from policies.base import CacheSpec
from policies.list_head import SlabList
from policies.slub.geometry import SlubGeometry
from simcore.spinlock import SpinLock

if TYPE_CHECKING:
    from policies.slub.barn import NodeBarn
    from policies.slub.sheaf import SlabSheaf, SlubPercpuSheaves

NUMA_NO_NODE = -1
E2BIG = "E2BIG"
ENOMEM = "ENOMEM"
"""barn_replace_full_sheaf's error returns (ERR_PTR(-E2BIG) / ERR_PTR(-ENOMEM))."""

STAT_ITEMS = (
    "alloc_cpu_sheaf", "alloc_fastpath", "alloc_slowpath", "free_cpu_sheaf", "free_fastpath",
    "free_slowpath", "free_frozen", "free_add_partial", "free_remove_partial",
    "alloc_from_partial", "alloc_slab", "alloc_refill", "alloc_node_mismatch", "free_slab",
    "cpuslab_flush", "deactivate_full", "deactivate_empty", "deactivate_to_head",
    "deactivate_to_tail", "deactivate_remote_frees", "deactivate_bypass", "order_fallback",
    "cmpxchg_double_cpu_fail", "cmpxchg_double_fail", "cpu_partial_alloc", "cpu_partial_free",
    "cpu_partial_node", "cpu_partial_drain", "sheaf_flush", "sheaf_refill", "sheaf_alloc",
    "sheaf_free", "barn_get", "barn_get_fail", "barn_put", "barn_put_fail",
)
"""enum stat_item of the 6.18 tree (ALLOC_PCS ... BARN_PUT_FAIL) by their sysfs file names."""

(ALLOC_PCS, ALLOC_FASTPATH, ALLOC_SLOWPATH, FREE_PCS, FREE_FASTPATH, FREE_SLOWPATH, FREE_FROZEN,
 FREE_ADD_PARTIAL, FREE_REMOVE_PARTIAL, ALLOC_FROM_PARTIAL, ALLOC_SLAB, ALLOC_REFILL,
 ALLOC_NODE_MISMATCH, FREE_SLAB, CPUSLAB_FLUSH, DEACTIVATE_FULL, DEACTIVATE_EMPTY,
 DEACTIVATE_TO_HEAD, DEACTIVATE_TO_TAIL, DEACTIVATE_REMOTE_FREES, DEACTIVATE_BYPASS,
 ORDER_FALLBACK, CMPXCHG_DOUBLE_CPU_FAIL, CMPXCHG_DOUBLE_FAIL, CPU_PARTIAL_ALLOC,
 CPU_PARTIAL_FREE, CPU_PARTIAL_NODE, CPU_PARTIAL_DRAIN, SHEAF_FLUSH, SHEAF_REFILL, SHEAF_ALLOC,
 SHEAF_FREE, BARN_GET, BARN_GET_FAIL, BARN_PUT, BARN_PUT_FAIL) = range(len(STAT_ITEMS))


@dataclass(eq=False)
class Slab:
    """struct slab (the folio's SLUB fields): `freelist` holds the objects free in the slab
    itself (not those on a CPU's lockless freelist); `inuse` = objects - len(freelist)."""

    base: int
    order: int
    objects: int
    node: int
    freelist: list[int] = field(default_factory=list)
    inuse: int = 0
    frozen: bool = False
    """Owned by a CPU as its cpu slab: frees go to `freelist` without list handling."""
    node_partial: bool = False
    """slab_test_node_partial: on its node's partial list (PG_workingset in the kernel)."""
    prev: Slab | None = field(default=None, repr=False)
    next: Slab | None = field(default=None, repr=False)
    on: SlabList | None = field(default=None, repr=False)


@dataclass(eq=False)
class KmemCacheCpu:
    """struct kmem_cache_cpu: the lockless freelist and its transaction id, the cpu slab, the
    cpu partial list (`partial[-1]` is the head; its `slabs` count is `len(partial)`), and the
    CONFIG_SLUB_STATS counters of this CPU."""

    cpu: int
    freelist: list[int] = field(default_factory=list)
    tid: int = 0
    slab: Slab | None = None
    partial: list[Slab] = field(default_factory=list)
    stat: list[int] = field(default_factory=lambda: [0] * len(STAT_ITEMS))


@dataclass(eq=False)
class KmemCacheNode:
    """struct kmem_cache_node: the node's partial list under list_lock, the slab and object
    counts (CONFIG_SLUB_DEBUG's nr_slabs / total_objects) and, with sheaves, the node's barn."""

    node: int
    list_lock: SpinLock
    partial: SlabList = field(default_factory=lambda: SlabList("partial"))
    nr_slabs: int = 0
    total_objects: int = 0
    pages: int = 0
    """Pages of this node's slabs (slabs allocated at the fallback order are smaller)."""
    barn: NodeBarn | None = None

    @property
    def nr_partial(self) -> int:
        return len(self.partial)


@dataclass(eq=False)
class SlubCache:
    """struct kmem_cache: geometry, min_partial, cpu_partial / cpu_partial_slabs, the per-CPU
    and per-node structures, sheaf_capacity and cpu_sheaves (6.18)."""

    name: str
    spec: CacheSpec
    geo: SlubGeometry
    min_partial: int
    cpu_partial: int
    cpu_partial_slabs: int
    has_cpu_partial: bool
    cpu_slab: list[KmemCacheCpu]
    node: list[KmemCacheNode]
    sheaf_capacity: int = 0
    cpu_sheaves: list[SlubPercpuSheaves] | None = None
    live_sheaves: set[SlabSheaf] = field(default_factory=set)
    """Sheaves allocated and not yet freed (per CPU, in a barn, or held by a path)."""
    remote_node_defrag_ratio: int = 1000
    owner: dict[int, Slab] = field(default_factory=dict)
    """virt_to_slab: object address -> its slab."""
    slabs: dict[Slab, None] = field(default_factory=dict)
    """Every slab of the cache, in creation order (the kernel keeps no list of full slabs;
    this is the model's, for statistics and invariants)."""
    inuse: int = 0
    """Objects held by callers (not a kernel counter: allocs - frees)."""
    allocs: int = 0
    frees: int = 0
    alloc_fail: int = 0
    pcs_trylock_fail: int = 0
    """local_trylock failures on cpu_sheaves (not a kernel counter)."""
    transit: int = 0
    """Objects held by a path between two homes (taken from a freelist or sheaf, or handed
    in by a caller, and not yet placed): local variables of the kernel's functions."""
    busy: int = 0
    """Allocator operations in progress on any CPU (slow paths, shrink, flush work)."""

    @property
    def size(self) -> int:
        return self.geo.size

    def total(self, item: int) -> int:
        """A CONFIG_SLUB_STATS item summed over CPUs (show_stat)."""
        return sum(c.stat[item] for c in self.cpu_slab)
