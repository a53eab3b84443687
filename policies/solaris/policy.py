"""`solaris`: the illumos / OpenSolaris kmem object cache (Bonwick & Adams' magazines and vmem
paper as implemented in usr/src/uts/common/os/kmem.c, seeds/002): per-CPU loaded and previous
magazines, the depot of full and empty magazines with its working set, contention-driven
magazine resizing on the 15-second kmem_update, kmem_reap() under memory pressure, the slab
layer with its binned partial-slab tree, and the slab consolidator with client move callbacks.

This module holds the CPU layer and the depot (kmem_cache_alloc, kmem_cache_free,
kmem_cpu_reload, kmem_depot_alloc, kmem_depot_free), cache creation and the Policy hooks. The
slab layer is in `solaris_slablayer`, maintenance (working set, purge, resize, update, reap) in
`solaris_maint`, the consolidator in `solaris_consolidator`, the data structures in
`solaris_magazine` / `solaris_slab` / `solaris_cache`, and kstat / ::kmastat in
`solaris_report`. kmem's own caches are real caches of this policy: kmem_magazine_<N>
(magazines are allocated from them, KM_NOSLEEP, on the free path only), kmem_slab_cache and
kmem_bufctl_cache (arena kmem_msb), vmem's quantum caches kmem_va_<N> and the kmem_alloc_<N>
size classes; slab memory comes from the vmem arenas of `vmem.py`.

Locks: each CPU cache has its own cc_lock (adaptive mutex class "<cache>->cc_lock"), each cache
a depot lock ("<cache>->cache_depot_lock") and a slab-layer lock ("<cache>->cache_lock"); the
global list of caches is the kmem_cache_lock mutex. Lock order cache_lock -> cc_lock -> depot
lock, as in the kernel.
IRQs are never disabled: illumos kmem locks are adaptive mutexes, and interrupt threads may
block on them.

The per-CPU fast path. A cc_lock is only ever taken by its own CPU's allocations and frees and,
rarely, by kmem_taskq (purge, enable) and the move thread (magazine hunt). When the lock is
free, has no spinning waiter and was released no later than this thread's local time, no
other thread can hold or want it at any instant this thread's local run covers, so taking it
is charged locally ("lock_acquire", or a cache-line transfer when another CPU held it last)
and the lock's lock_stat acquisitions / hold time are updated without a SimPy event; the
magazine hit then completes without an event (`alloc_fast` / `free_fast` are that case as
plain calls). A path that must wait for the depot keeps the lock genuinely held (owner set),
so purge or the hunt spin on it as they would on the real mutex. Otherwise the lock is taken
with `SpinLock.lock`. Release uses the lock's plain release (it hands the lock to a waiter at
this thread's local time).

Deviations from the seed (each is also noted at the code):
- Adaptive mutexes (simcore.mutex.AdaptiveMutex) serve waiters in arrival order, where a
  turnstile orders them by priority.
- The cc_lock fast path above replicates SpinLock's acquire bookkeeping and calls its plain
  `_release` (simcore has no public event-free lock/unlock for a thread that cannot wait).
- Interrupt threads: simcore runs an interrupt handler in the interrupted thread's context. A
  handler that allocates from a cache whose cc_lock the interrupted thread holds (possible only
  while that thread waits for the depot lock) is reported by simcore as a self-deadlock,
  where illumos would let the interrupt thread block and the pinned thread finish.
- Constructors never fail (cache_alloc_fail counts only slab-creation failures); debug
  features (kmem_flags, buftags, audit, firewall, KMF_LITE) are not modelled (kmem_flags = 0).
- kmem_alloc_tryhard and kmem_alloc above kmem_max_cached (kmem_oversize_arena) are not
  modelled; `kmem_alloc` / `kmem_free` serve the size classes.
- Histograms (alloc.hit / alloc.refill / alloc.grow, free.hit / free.flush) are recorded for
  the experiment's caches only, not for kmem's and vmem's own caches. alloc.hit is a
  loaded/previous-magazine hit, alloc.refill a hit after a full-magazine exchange with the
  depot, alloc.grow a slab-layer allocation (with or without a new slab); free.hit is a
  loaded/previous-magazine push, free.flush any free that needed the depot or the slab layer.
- See also the module docstrings of solaris_slab, solaris_slablayer, solaris_maint and
  solaris_consolidator for the deviations of those layers.

Policy.reap(t, cache) is kmem_cache_reap_now (two ws_updates, then a ws_reap on kmem_taskq
that the caller waits for: every depot magazine is freed, CPU magazines are kept, no reclaim
callback, no defrag). Memory pressure reaches kmem_reap() through a shrinker registered as
"kmem_reap" (direct reclaim and kswapd call it; it starts an asynchronous reap and reports 0
pages freed) and through every failed slab allocation; workloads may also call
`policy.kmem_reap(t)`. Move callbacks are set with `kmem_cache_set_move(cache, callback)` or
`CacheSpec.move`; reclaim callbacks with `kmem_cache_set_reclaim(cache, gen_fn)`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from policies.base import CacheSpec, CacheStats, Gen, InvariantError, Policy, Tunable
from policies.solaris.cache import KmemCache
from policies.solaris.consolidator import KmemConsolidator
from policies.solaris.cpu_cache import KMEM_CPU_CACHE_SIZE, KmemCpuLayer
from policies.solaris.depot import KmemDepot
from policies.solaris.kmastat import (
    format_kmastat,
    format_kmem_slabs,
    format_kstat_p,
    format_vmem,
    kmem_cache_kstat,
)
from policies.solaris.magazine import (
    KMEM_MAGTYPE_TABLE,
    KmemCpuCache,
    KmemMaglist,
    KmemMagtype,
    initial_magtype_index,
)
from policies.solaris.slab import (
    KMEM_ALIGN,
    KMEM_ALLOC_SIZES,
    KMEM_BIG_ALLOC_SIZES,
    KMEM_BUFCTL_SIZE,
    KMEM_SLAB_SIZE,
    KmemHash,
    PartialSlabTree,
    kmem_slab_geometry,
)
from policies.solaris.slab_layer import KmemSlabLayer
from policies.solaris.update import KmemMaintenance
from policies.solaris.vmem import VmemArena, VmemLayer
from simcore.cpu import Thread
from simcore.machine import Machine
from simcore.mutex import AdaptiveMutex
from simcore.sched import ILLUMOS_MINCLSYSPRI
from simcore.taskq import Taskq
from simcore.waitqueue import WaitQueue


class SolarisPolicy(KmemCpuLayer, KmemDepot, KmemSlabLayer, KmemMaintenance, KmemConsolidator,
                    VmemLayer, Policy):
    """illumos kmem: magazines, depot, resizing, reaping, slab consolidator."""

    name = "solaris"
    summary = ("illumos kmem: loaded/previous per-CPU magazines, depot with working set, "
               "magazine resizing, kmem_reap, slab consolidator")
    tunables = (
        Tunable("kmem_reap_interval", 0, "ticks between kmem_update passes and the kmem_reap "
                "cool-down (kmem_update_timeout, kmem_reap_done); 0 means 15 * hz", minimum=0),
        Tunable("kmem_depot_contention", 3, "failed depot try-locks per update interval above "
                "which kmem_cache_update queues a magazine resize", minimum=0),
        Tunable("kmem_frag_minslabs", 101, "slabs a cache needs before "
                "kmem_cache_is_fragmented can say yes", minimum=0),
        Tunable("kmem_frag_numer", 1, "fragmentation threshold numerator (free/total)",
                minimum=0),
        Tunable("kmem_frag_denom", 8, "fragmentation threshold denominator", minimum=1),
        Tunable("kmem_reclaim_max_slabs", 1, "candidate slabs kmem_cache_scan moves buffers "
                "from per interval", minimum=0),
        Tunable("kmem_reclaim_scan_range", 12, "slabs kmem_cache_scan examines from the back "
                "of the partial tree, and scans per threshold adjustment", minimum=0),
        Tunable("kmem_move_noreap", False, "kmem_cache_reap skips the desperate defrag"),
        Tunable("kmem_move_blocked", False, "kmem_move_buffers does nothing"),
        Tunable("kmem_move_fulltilt", False, "every scan is desperate, no slab-count check"),
        Tunable("kmem_move_any_partial", False, "any partial slab not NOMOVE is a candidate"),
        Tunable("kmem_heap_size", 0, "bytes of kernel heap VA (the heap arena's one span); 0: "
                "twice the RAM", minimum=0),
    )

    def __init__(self, machine: Machine, tunables: dict[str, Any] | None = None) -> None:
        super().__init__(machine, tunables)
        m = machine
        self.reap_interval = m.jiffies(self.tun["kmem_reap_interval"] or 15 * m.hz)
        """kmem_reap_interval in ns."""
        self.kmem_caches: list[KmemCache] = []
        """kmem_caches: every cache, magazine caches first, in creation order."""
        self.kmem_cache_lock = AdaptiveMutex(m, "kmem_cache_lock")
        self.kmem_taskq = Taskq(m, "kmem_taskq", 1, pri=ILLUMOS_MINCLSYSPRI)
        """Single-threaded maintenance queue (rescale, resize, scan, reap, update timeout)."""
        self.kmem_move_taskq = Taskq(m, "kmem_move_taskq", 1, pri=ILLUMOS_MINCLSYSPRI)
        """Single-threaded queue of every move callback of every cache."""
        self.reaping = {"kmem_reaping": False, "kmem_reaping_idspace": False}
        """kmem_reaping / kmem_reaping_idspace: a reap pass is running or cooling down."""
        self.kmem_updates = 0
        self.update_contention: dict[str, int] = {}
        """Failed depot try-locks per cache seen by the latest kmem_update pass (non-zero
        only), logged with its `kmem_update` event."""
        self._contention_seen: dict[str, int] = {}
        """cache_depot_contention of each cache at the last pass (for that event)."""
        self.kmem_reap_passes = 0
        self.kmem_move_stats: Counter[str] = Counter()
        """The KMEM_STATS kms_* counters (reference 7.2)."""
        self.vmem_wq = WaitQueue(m, "kmem_vmem")
        self.vmem_frees = 0
        self.vmem_waits = 0
        metrics = m.metrics
        self._h = {k: metrics.hist(k) for k in ("alloc.hit", "alloc.refill", "alloc.grow",
                                                 "free.hit", "free.flush")}
        self._tally = {k: h.tally for k, h in self._h.items()}
        """The path histograms' tallies (`LogHistogram.tally`), which the miss paths count
        their latencies in."""
        c = m.costs
        self._call_ns, self._pop_ns, self._push_ns = c["call"], c["magazine_pop"], c[
            "magazine_push"]
        self._object_move_ns, self._list_op_ns = c["object_move"], c["list_op"]
        """Cost-table entries the miss paths charge (summed where no synchronisation is
        between them)."""
        self._cc_hit_ns = self.cc_hit_costs()
        (self._hit_alloc_ns, self._hit_alloc_reload_ns, self._hit_free_ns,
         self._hit_free_reload_ns) = [(release, ns) for release, ns, _hold in self._cc_hit_ns]
        """(until the release, total) ns of each counted hit kind, as the hits read them."""
        metrics.add_fold(self.fold_hits)
        self.vmem_list: list[VmemArena] = []
        """Every arena in creation order (vm_id)."""
        self.vmem: dict[str, VmemArena] = {}
        self.kmem_vmem_init()
        self.kmem_magtype = [KmemMagtype(*row) for row in KMEM_MAGTYPE_TABLE]
        """kmem_magtype[], each row with its kmem_magazine_<N> cache."""
        for mt in self.kmem_magtype:
            mt.mt_cache = self.kmem_cache_create_internal(
                f"kmem_magazine_{mt.mt_magsize}", mt.bufsize, mt.mt_align, "kmem_msb",
                frozenset({"KMC_NOHASH"}))
        self.kmem_slab_cache = self.kmem_cache_create_internal(
            "kmem_slab_cache", KMEM_SLAB_SIZE, 0, "kmem_msb", frozenset({"KMC_NOHASH"}))
        self.kmem_bufctl_cache = self.kmem_cache_create_internal(
            "kmem_bufctl_cache", KMEM_BUFCTL_SIZE, 0, "kmem_msb", frozenset({"KMC_NOHASH"}))
        self.kmem_va_init()
        self.kmem_alloc_table: dict[int, KmemCache] = {}
        """kmem_alloc_table / kmem_big_alloc_table: size class by its size."""
        for size in KMEM_ALLOC_SIZES + KMEM_BIG_ALLOC_SIZES:
            align = KMEM_ALIGN
            if size % 64 == 0:
                align = 64
            if size % m.memory.page_size == 0:
                align = m.memory.page_size
            self.kmem_alloc_table[size] = self.kmem_cache_create_internal(
                f"kmem_alloc_{size}", size, align, "kmem_default",
                frozenset({"KMC_KMEM_ALLOC"}))

    # --- cache creation -------------------------------------------------------------------
    def _kmem_cache_create(self, spec: CacheSpec, arena: str, cflags: frozenset[str],
                           qcache_slabsize: int = 0) -> KmemCache:
        """kmem_cache_create (L3235-3508) for a non-debug kernel that is ready: geometry, the
        initial magazine type from the chunk size, CPU caches enabled at once (kmem_ready)."""
        m = self.machine
        if self.vmem[arena].identifier:
            cflags = cflags | {"KMC_IDENTIFIER"}
        geo = kmem_slab_geometry(spec.size, spec.align, m.memory.page_size, cflags,
                                 qcache_slabsize)
        idx = initial_magtype_index(geo.chunksize)
        magtype = self.kmem_magtype[idx]
        nomagazine = "KMC_NOMAGAZINE" in cflags
        cpus = [KmemCpuCache(AdaptiveMutex(m, f"{spec.name}->cc_lock")) for _ in m.cpus]
        for ccp in cpus:
            ccp.cc_magsize = 0 if nomagazine else magtype.mt_magsize
        cp = KmemCache(
            name=spec.name, spec=spec, arena=arena, cflags=cflags, geo=geo,
            align=spec.align or KMEM_ALIGN,
            cache_lock=AdaptiveMutex(m, f"{spec.name}->cache_lock"),
            cache_depot_lock=AdaptiveMutex(m, f"{spec.name}->cache_depot_lock"),
            cache_cpu=cpus, cache_magtype=magtype,
            magtype_index=idx, nomagazine=nomagazine,
            partial=PartialSlabTree(geo.binshift, geo.maxchunks),
            hash=KmemHash(geo.chunksize) if geo.hashed else None,
            cache_full=KmemMaglist(), cache_empty=KmemMaglist(), cache_color=geo.mincolor,
            arena_id=self.vmem[arena].vm_id)
        self.kmem_caches.append(cp)
        return cp

    def kmem_cache_create_internal(self, name: str, size: int, align: int, arena: str,
                                   cflags: frozenset[str],
                                   qcache_slabsize: int = 0) -> KmemCache:
        """kmem_cache_create of one of kmem's or vmem's own caches (magazines, slab headers,
        bufctls, quantum caches, kmem_alloc_<N>)."""
        spec = CacheSpec(name, size, align)
        return self._kmem_cache_create(spec, arena, cflags, qcache_slabsize)

    def create_cache(self, spec: CacheSpec) -> KmemCache:
        """kmem_cache_create for an experiment's cache (arena kmem_default); a `spec.move`
        callback is installed with kmem_cache_set_move. A cache named like a kmem_alloc size
        class (`kmem_alloc_128`) is that class, with its real alignment (kmem_alloc_caches_
        create, L3699-3702), not a new cache."""
        cp = next((c for c in self.kmem_alloc_table.values()
                   if c.name == spec.name and c.spec.size == spec.size), None)
        if cp is None:
            cp = self._kmem_cache_create(spec, "kmem_default", frozenset(spec.flags))
        cp.record = True
        if spec.move is not None:
            self.kmem_cache_set_move(cp, spec.move)
        return cp

    def kmem_alloc(self, t: Thread, size: int, kmflag: int) -> Gen:
        """kmem_alloc (L2422): the size class of kmem_alloc_table ((size - 1) >> 3 up to
        KMEM_MAXBUF) or kmem_big_alloc_table ((size - 1) >> 12 up to kmem_max_cached)."""
        return (yield from self.kmem_cache_alloc(t, self.kmem_alloc_class(size), kmflag))

    def kmem_free(self, t: Thread, buf: int, size: int) -> Gen:
        """kmem_free (L2494): back to the size class of `size`."""
        yield from self.kmem_cache_free(t, self.kmem_alloc_class(size), buf)

    def kmem_alloc_class(self, size: int) -> KmemCache:
        """The kmem_alloc_<N> cache serving `size` bytes."""
        for n, cp in self.kmem_alloc_table.items():
            if size <= n:
                return cp
        raise ValueError(f"kmem_alloc of {size} bytes is above kmem_max_cached")

    def kmem_cache_set_reclaim(self, cp: KmemCache, reclaim: Any) -> None:
        """The reclaim argument of kmem_cache_create: `reclaim(t)` is a generator function run
        on kmem_taskq by kmem_cache_reap (it may free objects with `free`)."""
        cp.cache_reclaim = reclaim

    def start(self) -> None:
        """kmem_mp_init: arm the first kmem_update; register kmem_reap as a shrinker."""
        self._timeout(self.kmem_update, self.reap_interval, "callout/kmem_update")
        self.machine.memory.register_shrinker("kmem_reap", self._shrink_count,
                                              self._shrink_scan)

    def _shrink_count(self) -> int:
        return sum(cp.cache_full.ml_total * cp.cache_magtype.mt_magsize
                   for cp in self.kmem_caches)

    def _shrink_scan(self, t: Thread, _nr: int) -> Gen:
        """Pageout's call into kmem: start a (throttled, asynchronous) kmem_reap."""
        yield from self.kmem_reap(t)
        return 0

    # --- Policy hooks ---------------------------------------------------------------------
    # alloc / free are kmem_cache_alloc / kmem_cache_free themselves (one generator less on
    # every slow-path operation and every resume of it), and the fast paths are the CPU
    # layer's loaded/previous-magazine hits (one call less on every operation)
    alloc = KmemCpuLayer.kmem_cache_alloc
    free = KmemCpuLayer.kmem_cache_free
    alloc_fast = KmemCpuLayer._alloc_hit
    free_fast = KmemCpuLayer._free_hit

    def usual_hit_ns(self, cache: KmemCache) -> tuple[int, int]:
        """A plain loaded-magazine hit with the lock's line local (no kmem_cpu_reload swap,
        which adds an object_move; no bounce): the cost most hits charge."""
        return (self._hit_alloc_ns[1], self._hit_free_ns[1])

    def reap(self, t: Thread, cache: KmemCache) -> Gen:
        """kmem_cache_reap_now (see the module docstring)."""
        yield from self.kmem_cache_reap_now(t, cache)

    def destroy(self, t: Thread, cache: KmemCache) -> Gen:
        """kmem_cache_destroy (L3603): unlink the cache, wait for both taskqs, purge; a cache
        that still has buffers is reported (CE_WARN "not empty", an event) and its slabs are
        leaked, as in the kernel."""
        cp = cache
        yield from self.kmem_cache_lock.lock(t)
        self.fold_hits()
        self.kmem_caches.remove(cp)
        yield from self.kmem_cache_lock.unlock(t)
        yield from self._taskq_wait(t, self.kmem_taskq)
        yield from self._taskq_wait(t, self.kmem_move_taskq)
        yield from self.kmem_cache_magazine_purge(t, cp)
        yield from cp.cache_lock.lock(t)
        if cp.cache_buftotal:
            self.machine.metrics.event("kmem_cache_destroy_not_empty", time=t.now, cache=cp.name,
                                       buf_total=cp.cache_buftotal)
        cp.cache_defrag = None
        cp.cache_move = None
        cp.destroyed = True
        yield from cp.cache_lock.unlock(t)
        if cp in self.caches:
            self.caches.remove(cp)

    def stats(self, cache: KmemCache) -> CacheStats:
        self.fold_hits()
        cp = cache
        ks = kmem_cache_kstat(cp)
        dfg = cp.cache_defrag
        dead = list(dfg.kmd_deadlist) if dfg is not None else []
        slabs = len(cp.complete) + len(cp.partial) + len(dead)
        meta = len(cp.cache_cpu) * KMEM_CPU_CACHE_SIZE
        meta += cp.magazines_held() * cp.cache_magtype.mt_cache.chunksize
        if cp.hash is not None:
            bufctls = cp.cache_buftotal + sum(sp.chunks for sp in dead)
            meta += slabs * KMEM_SLAB_SIZE + bufctls * KMEM_BUFCTL_SIZE
            meta += (cp.hash.mask + 1) * 8
        return CacheStats(
            name=cp.name, obj_size=cp.spec.size, objs_inuse=ks["buf_inuse"],
            objs_cached=ks["buf_constructed"], objs_free=cp.cache_bufslab,
            slabs=slabs, slabs_partial=len(cp.partial), slabs_empty=len(dead),
            bytes_slab=slabs * cp.slabsize, bytes_meta=meta,
            objs_per_slab=cp.geo.chunks(cp.geo.mincolor),
            pages_per_slab=cp.slabsize // self.machine.memory.page_size,
            tunables_apply=False, extra=ks)

    def reports(self) -> dict[str, str]:
        """kmastat.txt (::kmastat), vmem.txt (::vmem), kmem_slabs.txt (::kmem_slabs) and
        kstat.txt (`kstat -p -c kmem_cache`), over every cache including kmem's own."""
        return {"kmastat.txt": format_kmastat(self.kmem_caches, self.vmem_tree()),
                "vmem.txt": format_vmem(self.vmem_tree()),
                "kmem_slabs.txt": format_kmem_slabs(self.kmem_caches),
                "kstat.txt": format_kstat_p(self.kmem_caches)}

    # --- invariants -----------------------------------------------------------------------
    def check_invariants(self) -> None:
        """Conservation (buf_total = free in slabs + CPU and depot magazine rounds + callers'
        hands + kmem's in-transit buffers), the previous-magazine invariant, the slab
        counters (slab_create - slab_destroy = complete + partial + dead; slab_alloc -
        slab_free = allocated), the partial tree's order, and that every magazine round is a
        distinct buffer the slab layer sees as allocated."""
        self._check_vmem()
        for cp in self.kmem_caches:
            self._check_cpu_layer(cp)
            self._check_slab_layer(cp)
            constructed = cp.buf_constructed()
            if cp.inuse < 0 or cp.in_transit < 0:
                raise InvariantError(f"{cp.name}: inuse {cp.inuse} in_transit {cp.in_transit}")
            total = cp.cache_bufslab + constructed + cp.inuse + cp.in_transit
            if total != cp.cache_buftotal:
                raise InvariantError(
                    f"{cp.name}: conservation: bufslab {cp.cache_bufslab} + constructed "
                    f"{constructed} + inuse {cp.inuse} + in_transit {cp.in_transit} = {total} "
                    f"!= buf_total {cp.cache_buftotal}")

    def _check_vmem(self) -> None:
        """vmem accounting: an arena with a source holds exactly what it imported (one segment
        per imported span), and an arena's in-use bytes cover its children's spans that did
        not come from its quantum caches and its caches' live slabs (equal when no allocation
        or free is between its steps)."""
        slab_bytes: Counter[str] = Counter()
        for cp in self.kmem_caches:
            slab_bytes[cp.arena] += (cp.cache_slab_create - cp.cache_slab_destroy) * cp.slabsize
        for vmp in self.vmem_list:
            spans = sum(size for _src, size in vmp.span_of.values())
            if vmp.source is not None and not (
                    vmp.vk_mem_inuse == vmp.vk_mem_total == vmp.vk_mem_import == spans):
                raise InvariantError(f"vmem {vmp.name}: in use {vmp.vk_mem_inuse}, total "
                                     f"{vmp.vk_mem_total}, import {vmp.vk_mem_import}, "
                                     f"spans {spans}")
            under = slab_bytes[vmp.name] + sum(size for c in vmp.children
                                               for _src, size in c.span_of.values()
                                               if size > vmp.qcache_max)
            if vmp.vk_mem_inuse < under or vmp.vk_mem_inuse > vmp.vk_mem_total:
                raise InvariantError(f"vmem {vmp.name}: in use {vmp.vk_mem_inuse}, children "
                                     f"and slabs {under}, total {vmp.vk_mem_total}")

    def _check_cpu_layer(self, cp: KmemCache) -> None:
        rounds: list[int] = []
        for i, ccp in enumerate(cp.cache_cpu):
            ms = ccp.cc_magsize
            for mp, n, what in ((ccp.cc_loaded, ccp.cc_rounds, "loaded"),
                                (ccp.cc_ploaded, ccp.cc_prounds, "previous")):
                if (mp is None) != (n == -1):
                    raise InvariantError(f"{cp.name} cpu{i}: {what} magazine {mp} rounds {n}")
                if mp is not None:
                    if mp.magsize != ms or not 0 <= n <= ms:
                        raise InvariantError(f"{cp.name} cpu{i}: {what} magazine of "
                                             f"{mp.magsize} with {n} rounds, cc_magsize {ms}")
                    rounds += mp.mag_round[:n]
            if ccp.cc_prounds not in (-1, 0, ms):
                raise InvariantError(f"{cp.name} cpu{i}: previous magazine neither full nor "
                                     f"empty ({ccp.cc_prounds} of {ms})")
        n = cp.cache_magtype.mt_magsize
        for mlp, full in ((cp.cache_full, True), (cp.cache_empty, False)):
            if len(mlp.ml_list) != mlp.ml_total or mlp.ml_min > mlp.ml_total:
                raise InvariantError(f"{cp.name}: depot list total {mlp.ml_total}, "
                                     f"{len(mlp.ml_list)} magazines, min {mlp.ml_min}")
            for mp in mlp.ml_list:
                if mp.magsize != n:
                    raise InvariantError(f"{cp.name}: depot magazine of {mp.magsize} rounds, "
                                         f"magazine type {n}")
                if full:
                    rounds += mp.mag_round
        if len(set(rounds)) != len(rounds):
            raise InvariantError(f"{cp.name}: a buffer is in two magazine slots")
        for buf in rounds:
            owner = cp.hash.lookup(buf) if cp.hash is not None else self._slab_of(cp, buf)
            if owner is None or buf in owner.free_set:
                raise InvariantError(f"{cp.name}: magazine round {buf:#x} is not an allocated "
                                     f"buffer")

    def _check_slab_layer(self, cp: KmemCache) -> None:
        dfg = cp.cache_defrag
        dead = list(dfg.kmd_deadlist) if dfg is not None else []
        if dfg is not None and dfg.kmd_deadcount != len(dead):
            raise InvariantError(f"{cp.name}: deadcount {dfg.kmd_deadcount} != {len(dead)}")
        if cp.cache_slab_create - cp.cache_slab_destroy != cp.live_slabs():
            raise InvariantError(f"{cp.name}: slab_create - slab_destroy != complete + partial "
                                 f"+ dead")
        live = [*cp.complete, *cp.partial.slabs]
        buftotal = sum(sp.chunks for sp in live)
        allocated = sum(sp.refcnt for sp in live)
        if buftotal != cp.cache_buftotal or buftotal - allocated != cp.cache_bufslab:
            raise InvariantError(f"{cp.name}: buf_total/bufslab disagree with the slabs")
        if cp.cache_slab_alloc - cp.cache_slab_free != allocated:
            raise InvariantError(f"{cp.name}: slab_alloc - slab_free != allocated buffers")
        if cp.cache_bufmax < cp.cache_buftotal:
            raise InvariantError(f"{cp.name}: buf_max below buf_total")
        for sp in cp.complete:
            if not sp.is_all_used() or sp.where != "complete":
                raise InvariantError(f"{cp.name}: complete slab with free buffers")
        keys = cp.partial.keys
        if keys != sorted(keys) or len(set(keys)) != len(keys):
            raise InvariantError(f"{cp.name}: partial tree out of order")
        for sp, k in zip(cp.partial.slabs, keys, strict=True):
            if not sp.is_partial() or k != (cp.partial.weight(sp), sp.mem) or sp.key != k:
                raise InvariantError(f"{cp.name}: partial tree holds a slab with a stale key "
                                     f"or that is not partial")
        for sp in dead:
            if sp.refcnt:
                raise InvariantError(f"{cp.name}: slab on the deadlist has buffers in use")
        for sp in live:
            if len(sp.head) != sp.chunks - sp.refcnt or set(sp.head) != sp.free_set:
                raise InvariantError(f"{cp.name}: slab free stack disagrees with refcnt")
        if cp.hash is not None and len(cp.hash.slab_of) != allocated:
            raise InvariantError(f"{cp.name}: hash holds {len(cp.hash.slab_of)} bufctls, "
                                 f"{allocated} allocated")
