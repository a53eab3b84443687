"""Linux SLAB data structures (seeds/003 mm/slab.c): `struct array_cache`, `struct slab`,
`struct kmem_list3` and `struct kmem_cache` with its STATS counters."""

from __future__ import annotations

from dataclasses import dataclass, field

from policies.base import CacheSpec
from policies.linux_slab.geometry import CpuCacheTunables, SlabGeometry
from policies.list_head import SlabList
from simcore.spinlock import SpinLock


@dataclass(eq=False, slots=True)
class ArrayCache:
    """struct array_cache: a LIFO stack of object pointers (`entry[avail - 1]` is the top).
    Serves as per-CPU array, per-node shared array and alien array."""

    limit: int
    batchcount: int
    entry: list[int] = field(default_factory=list)
    touched: bool = False
    lock: SpinLock | None = None
    """Only alien arrays use their lock."""
    alloc_hits: int = 0
    free_hits: int = 0
    """A CPU array's counted hits (alloc_fast / free_fast) not yet folded into the cache's
    counters and the statistics (fold_hits)."""

    @property
    def avail(self) -> int:
        return len(self.entry)


@dataclass(eq=False, slots=True)
class LinuxSlab:
    """struct slab: `free` is the bufctl free chain as a stack (end of list = `slabp->free`)."""

    base: int
    num: int
    nodeid: int
    colouroff: int
    free: list[int] = field(default_factory=list)
    inuse: int = 0
    prev: LinuxSlab | None = field(default=None, repr=False)
    next: LinuxSlab | None = field(default=None, repr=False)
    on: SlabList | None = field(default=None, repr=False)


@dataclass(eq=False, slots=True)
class KmemList3:
    """struct kmem_list3: one node's slab lists, free_objects and free_limit under list_lock,
    with the node's shared array and alien arrays (indexed by remote node)."""

    node: int
    list_lock: SpinLock
    free_limit: int
    slabs_partial: SlabList = field(default_factory=lambda: SlabList("slabs_partial"))
    slabs_full: SlabList = field(default_factory=lambda: SlabList("slabs_full"))
    slabs_free: SlabList = field(default_factory=lambda: SlabList("slabs_free"))
    free_objects: int = 0
    colour_next: int = 0
    shared: ArrayCache | None = None
    alien: dict[int, ArrayCache] = field(default_factory=dict)
    next_reap: int = 0
    """Jiffies-derived ns time of the next node-level reap."""
    free_touched: bool = False


@dataclass(eq=False, slots=True)
class LinuxCache:
    """struct kmem_cache with the STATS counters printed by /proc/slabinfo (statistics)."""

    name: str
    spec: CacheSpec
    geo: SlabGeometry
    tun: CpuCacheTunables
    array: list[ArrayCache | None]
    """Per-CPU arrays by CPU id (2.6.17: None for a CPU that went down)."""
    nodelists: list[KmemList3]
    owner: dict[int, LinuxSlab] = field(default_factory=dict)
    """virt_to_slab: object address -> its slab."""
    inuse: int = 0
    """Objects held by callers (not a kernel counter: allocs - frees)."""
    allocs: int = 0
    frees: int = 0
    alloc_fail: int = 0
    # STATS counters (slabinfo globalstat and cpustat)
    num_active: int = 0
    num_allocations: int = 0
    high_mark: int = 0
    grown: int = 0
    reaped: int = 0
    errors: int = 0
    max_freeable: int = 0
    node_allocs: int = 0
    node_frees: int = 0
    node_overflow: int = 0
    allochit: int = 0
    allocmiss: int = 0
    freehit: int = 0
    freemiss: int = 0
    destroyed: int = 0
    """Slabs destroyed by free_block's free_limit check (not a kernel counter)."""
    rcu: bool = False
    """SLAB_DESTROY_BY_RCU: slab pages are freed after an RCU grace period."""
    mem_spread: bool = False
    """SLAB_MEM_SPREAD: cpuset memory spreading applies (alternate_node_alloc)."""
    rcu_pending: int = 0
    """Destroyed slabs whose pages wait for the grace period (not a kernel counter)."""
    rcu_freed: int = 0
    """Slabs freed by kmem_rcu_free (not a kernel counter)."""
    rcu_last_due: int = 0
    retiring: list[ArrayCache] = field(default_factory=list)
    """Arrays do_tune_cpucache swapped out whose objects are not yet back in the slabs."""
    spread_allocs: int = 0
    """Objects alternate_node_alloc took from another node (not a kernel counter)."""

    @property
    def limit(self) -> int:
        return self.tun.limit

    @property
    def batchcount(self) -> int:
        return self.tun.batchcount

    @property
    def shared(self) -> int:
        return self.tun.shared
