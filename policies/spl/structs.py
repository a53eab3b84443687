"""The SPL kmem cache's data structures (include/os/linux/spl/sys/kmem_cache.h): the cache
(spl_kmem_cache_t), its per-CPU magazines (spl_kmem_magazine_t), slabs (spl_kmem_slab_t) and
the slab lists, which are kernel `list_head` lists with head and tail insertion."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from policies.base import CacheSpec
from policies.list_head import SlabList
from policies.spl.geometry import SlabGeometry
from simcore.spinlock import SpinLock
from simcore.waitqueue import BitFlags, WaitQueue

KMC_BIT_NOEMERGENCY = 9
KMC_BIT_DEADLOCKED = 14
KMC_BIT_GROWING = 15
KMC_BIT_REAPING = 16
KMC_BIT_DESTROY = 17

KMC_FLAG_BITS = {"KMC_NOTOUCH": 0, "KMC_NODEBUG": 1, "KMC_NOMAGAZINE": 2, "KMC_NOHASH": 3,
                 "KMC_QCACHE": 4, "KMC_KMEM": 5, "KMC_VMEM": 6, "KMC_KVMEM": 7, "KMC_SLAB": 8,
                 "KMC_NOEMERGENCY": KMC_BIT_NOEMERGENCY}
"""Creation flags by name -> bit in skc_flags (spl-0.7 numbering)."""

ENOMEM, EAGAIN, EEXIST, ENOENT = 12, 11, 17, 2
"""The errno values the SPL paths return (negated)."""

MAX_ORDER = 11
"""Linux's MAX_ORDER on x86-64 (orders 0..10), behind KMALLOC_MAX_SIZE under SLAB."""
PAGE_ALLOC_COSTLY_ORDER = 3
"""Linux's PAGE_ALLOC_COSTLY_ORDER, behind SPL_MAX_KMEM_ORDER_NR_PAGES under SLUB."""

SPL_TASKQ_THREAD_TIMEOUT_MS = 5000
"""spl-taskq.c spl_taskq_thread_timeout_ms: the rate limit of idle dynamic worker exits."""

SPL_KMEM_CACHE_DELAY = 15.0
"""spl-0.7: seconds a magazine may sit unused before the aging timer flushes it (skc_delay)."""


@dataclass(eq=False)
class SplSlab:
    """spl_kmem_slab_t: one vmalloc'ed slab with its objects' free list."""

    base: int
    objs: int
    """sks_objs."""
    free: list[int] = field(default_factory=list)
    """sks_free_list; the end of the Python list is the head of the kernel list."""
    ref: int = 0
    """sks_ref: objects handed out from this slab."""
    age: int = 0
    """sks_age: time of the last object taken or returned, ns."""
    prev: SplSlab | None = field(default=None, repr=False)
    next: SplSlab | None = field(default=None, repr=False)
    on: SlabList | None = field(default=None, repr=False)


@dataclass(eq=False)
class SplMagazine:
    """spl_kmem_magazine_t: one CPU's array of cached objects."""

    cpu: int
    size: int
    """skm_size."""
    refill: int
    """skm_refill: objects moved per refill and per flush."""
    objs: list[int] = field(default_factory=list)
    """skm_objs[0 .. skm_avail-1]; index 0 is the oldest."""
    age: int = 0
    """skm_age (spl-0.7 aging only): last time the magazine was used, ns."""
    alloc_hits: int = 0
    free_hits: int = 0
    """Magazine hits of the fast paths not yet folded into the statistics (not kernel
    state: the model counts constant-cost hits instead of recording each; see
    SplPolicy.fold_hits)."""


@dataclass(eq=False)
class SplCache:
    """spl_kmem_cache_t."""

    name: str
    spec: CacheSpec
    flags: BitFlags
    """skc_flags: creation flags and the KMC_BIT_* state bits."""
    lock: SpinLock
    """skc_lock."""
    waitq: WaitQueue
    """skc_waitq: growth waiters."""
    geo: SlabGeometry | None
    """Slab and magazine geometry (KMC_KVMEM caches)."""
    linux_cache: Any = None
    """skc_linux_cache: the Linux slab cache behind a KMC_SLAB cache."""
    mags: list[SplMagazine] = field(default_factory=list)
    """skc_mag: one magazine per possible CPU."""
    partial: SlabList = field(default_factory=lambda: SlabList("skc_partial_list"))
    complete: SlabList = field(default_factory=lambda: SlabList("skc_complete_list"))
    slab_of: dict[int, SplSlab] = field(default_factory=dict)
    """Object address -> its slab (spl_sko_from_obj: the trailing spl_kmem_obj_t)."""
    emergency: dict[int, int] = field(default_factory=dict)
    """skc_emergency_tree: emergency object address -> page order."""
    ref: int = 0
    """skc_ref: callers that must finish before the cache can be destroyed."""
    taskqid: int = 0
    """skc_taskqid: the pending aging task (spl-0.7)."""
    slab_fail: int = 0
    slab_create: int = 0
    slab_destroy: int = 0
    slab_total: int = 0
    slab_alloc: int = 0
    slab_max: int = 0
    obj_total: int = 0
    obj_alloc: int = 0
    obj_max: int = 0
    obj_deadlock: int = 0
    obj_emergency: int = 0
    obj_emergency_max: int = 0
    linux_alloc: int = 0
    """skc_linux_alloc (percpu_counter): objects of a KMC_SLAB cache in use."""
    grow_started: int = 0
    """Growth tasks dispatched (simulator count; the seed keeps none)."""
    slabs_created: int = 0
    """Slabs allocated by the growth worker (simulator count: skc_slab_create stays 0 in the
    seed)."""
    slabs_freed: int = 0
    age_skipped: int = 0
    """spl-0.7 aging: magazine age-outs skipped because skc_lock was contended."""
    hit_alloc_ns: int = 0
    hit_free_ns: int = 0
    """What a magazine hit costs with this cache's constructor / destructor (not kernel
    state: the fast paths' one charge, SplPolicy.cache_create)."""

    @property
    def is_slab(self) -> bool:
        """KMC_SLAB: served by the Linux slab."""
        return self.linux_cache is not None
