"""The illumos kmem cache structure (`kmem_cache_t`) and the consolidator's per-cache state
(`kmem_defrag_t`, `kmem_move_t`), as records.

Models the fields of kmem_cache_t that seeds/002 uses (statistics, slab layer, depot, CPU
layer; reference section 1.1) plus the simulator's own conservation counters `inuse` and
`in_transit`, which the kernel does not keep.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from policies.base import CacheSpec
from policies.solaris.magazine import KmemCpuCache, KmemMaglist, KmemMagtype
from policies.solaris.slab import KmemHash, KmemSlab, PartialSlabTree, SlabGeometry
from simcore.spinlock import SpinLock

KMM_DESPERATE = 0x1
KMM_NOTIFY = 0x2

MoveCallback = Callable[..., str]
"""move(t, old_addr, new_addr, size) -> "YES" | "NO" | "LATER" | "DONT_NEED" | "DONT_KNOW"."""


@dataclass(eq=False)
class KmemMove:
    """kmem_move_t: one pending move request."""

    kmm_from_slab: KmemSlab
    kmm_from_buf: int
    kmm_to_buf: int
    kmm_flags: int


@dataclass
class KmemDefrag:
    """kmem_defrag_t: consolidator statistics, pending moves, the deadlist and the reclaim
    threshold state of one movable cache."""

    kmd_callbacks: int = 0
    kmd_yes: int = 0
    kmd_no: int = 0
    kmd_later: int = 0
    kmd_dont_need: int = 0
    kmd_dont_know: int = 0
    kmd_hunt_found: int = 0
    kmd_moves_pending: dict[int, KmemMove] = field(default_factory=dict)
    """Pending moves by source buffer address (the AVL tree keyed by kmm_from_buf)."""
    kmd_deadlist: deque[KmemSlab] = field(default_factory=deque)
    """Empty slabs whose release waits for the pending moves to drain."""
    kmd_deadcount: int = 0
    kmd_reclaim_numer: int = 1
    """Candidate threshold numer/8, 1..7."""
    kmd_slabs_sought: int = 0
    kmd_slabs_found: int = 0
    """size_t in the kernel: an aborted scan's -1 wraps it (reproduced, see the scan)."""
    kmd_scans: int = 0


@dataclass(eq=False)
class KmemCache:
    """kmem_cache_t: one object cache with its CPU layer, depot and slab layer."""

    name: str
    spec: CacheSpec
    arena: str
    """vmem arena the slabs come from: kmem_default; kmem_msb for kmem's own caches; kmem_va
    for its quantum caches."""
    arena_id: int = field(default=0, kw_only=True)
    """vm_id of that arena (the vmem_source kstat)."""
    cflags: frozenset[str]
    geo: SlabGeometry
    align: int
    cache_lock: SpinLock
    """Slab layer: partial tree, complete list, hash, slab counters, defrag state."""
    cache_depot_lock: SpinLock
    """Depot lists, their counters, cache_magtype and the contention counters."""
    cache_cpu: list[KmemCpuCache]
    cache_magtype: KmemMagtype
    magtype_index: int
    nomagazine: bool
    """KMF_NOMAGAZINE: cc_magsize stays 0, every operation goes to the slab layer."""
    partial: PartialSlabTree
    hash: KmemHash | None = None
    """Allocated-buffer hash (KMF_HASH caches only)."""
    complete: dict[KmemSlab, None] = field(default_factory=dict)
    """cache_complete_slabs (insertion-ordered; the kernel's list order decides nothing)."""
    slab_of_mem: dict[int, KmemSlab] = field(default_factory=dict)
    """Live slabs by memory address (KMEM_SLAB() address arithmetic for embedded slabs)."""
    cache_full: KmemMaglist = field(default_factory=KmemMaglist)
    cache_empty: KmemMaglist = field(default_factory=KmemMaglist)
    cache_color: int = 0
    cache_move: MoveCallback | None = None
    cache_reclaim: Callable[..., Any] | None = None
    """Reclaim callback: a generator function reclaim(t) run on kmem_taskq."""
    cache_defrag: KmemDefrag | None = None
    # statistics (cache_*)
    cache_slab_create: int = 0
    cache_slab_destroy: int = 0
    cache_slab_alloc: int = 0
    cache_slab_free: int = 0
    cache_alloc_fail: int = 0
    cache_buftotal: int = 0
    cache_bufmax: int = 0
    cache_bufslab: int = 0
    cache_lookup_depth: int = 0
    cache_rescale: int = 0
    cache_depot_contention: int = 0
    cache_depot_contention_prev: int = 0
    # simulator bookkeeping (not in the kernel)
    inuse_base: int = 0
    """Objects in callers' hands (allocation returned, free not yet landed) but for the
    counted magazine hits not yet folded (KmemCpuCache.hit_*, KmemCpuLayer.fold_hits): the
    paths that record as they go count here, `inuse` adds the counted hits."""
    in_transit: int = 0
    """Objects kmem holds outside slabs and installed magazines: rounds of a magazine taken
    off a list or a CPU and not yet installed or destroyed, move destinations, hunt buffers."""
    cc_transit: int = 0
    """The part of `in_transit` moving between a CPU and the depot while the CPU's cc_lock is
    held (kmem_cache_alloc / kmem_cache_free's depot exchanges). kmem_cache_kstat_update
    takes every cc_lock, so the seed's kstat never sees these rounds off the CPU: it counts
    them as constructed (`kmem_cache_kstat`)."""
    reaps: int = 0
    """kmem_cache_reap runs."""
    resizes: int = 0
    """Magazine resizes done."""
    destroyed: bool = False
    record: bool = False
    """Record path histograms for this cache (the experiment's caches, not magazine caches)."""

    @property
    def inuse(self) -> int:
        """Objects in callers' hands: allocation returned, free not yet landed."""
        n = self.inuse_base
        for ccp in self.cache_cpu:
            n += ccp.hit_alloc + ccp.hit_alloc_reload - ccp.hit_free - ccp.hit_free_reload
        return n

    @property
    def chunksize(self) -> int:
        return self.geo.chunksize

    @property
    def slabsize(self) -> int:
        return self.geo.slabsize

    def buf_constructed(self) -> int:
        """kstat buf_constructed: rounds in CPU magazines plus full depot magazines."""
        return (sum(c.constructed() for c in self.cache_cpu)
                + self.cache_full.ml_total * self.cache_magtype.mt_magsize)

    def magazines_held(self) -> int:
        """Magazines this cache owns (CPU loaded/previous and both depot lists)."""
        cpu = sum((c.cc_loaded is not None) + (c.cc_ploaded is not None) for c in self.cache_cpu)
        return cpu + self.cache_full.ml_total + self.cache_empty.ml_total

    def live_slabs(self) -> int:
        """slab_create - slab_destroy: complete, partial and dead slabs."""
        dead = self.cache_defrag.kmd_deadcount if self.cache_defrag is not None else 0
        return len(self.complete) + len(self.partial) + dead
