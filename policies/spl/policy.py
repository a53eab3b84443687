"""`spl`: the OpenZFS SPL kmem cache (module/os/linux/spl/spl-kmem-cache.c, seed 000; seed 001
is an older revision whose differing rules are kept as tunable values).

Read it side by side with the seed; the functions below carry the seed's names and make its
decisions in its order:

- cache creation: `create_cache` (spl_kmem_cache_create) verifies the alignment, picks KMC_SLAB
  for objects up to `spl_kmem_cache_slab_limit` and KMC_KVMEM above (KVMEM wins when both are
  forced); KVMEM caches get `spl_slab_size` geometry and per-CPU magazines
  (`spl_magazine_create`), KMC_SLAB caches a Linux slab cache unless the object is larger than
  SPL_MAX_KMEM_ORDER_NR_PAGES pages (creation fails).
- allocation: `alloc` (spl_kmem_cache_alloc) -> `spl_cache_refill` -> `spl_cache_grow` ->
  the taskq's `spl_cache_grow_work` -> `__spl_cache_grow` -> `spl_slab_alloc`;
  `spl_emergency_alloc` once the cache is KMC_BIT_DEADLOCKED.
- free: `free` (spl_kmem_cache_free) -> `spl_emergency_free` / `spl_cache_flush` ->
  `spl_cache_shrink`, then `spl_slab_reclaim`.
- reaping: `reap` (spl_kmem_cache_reap_now), `spl_kmem_reap`; the spl-0.7 aging timer
  (`spl_cache_age` / `spl_magazine_age`) as an option.
- teardown: `destroy` (spl_kmem_cache_destroy).

KMC_SLAB caches are served by an embedded kernel slab allocator chosen by `kmc_slab_allocator`:
the `slub` policy (the default: SLUB is what kernels running OpenZFS have) or `linux_slab` (the
2.6.17 SLAB model), else by the `global_lock` baseline as a stand-in; the SPL only counts their
objects in `skc_linux_alloc`, as the seed does.

Tunables: the seed's module parameters with their names and defaults, plus switches that select
historical code for the deadlock scenarios (each says which commit it models).

Deviations from the seed (each is also noted at the code):
- fstrans (`spl_fstrans`): the seed marks every taskq worker (spl-taskq.c taskq_thread) and
  the growth path (`spl_fstrans_mark` in __spl_cache_grow, 000:948) with PF_MEMALLOC_NOIO, so
  the growth worker's vmalloc never waits on writeback. `spl_fstrans = "2012"` selects the
  SPL before fstrans, whose vmalloc page-table allocation ignored the caller's flags and could
  enter the file system (spl-history B1); in that era KM_PUSHPAGE also meant GFP_NOIO, where
  the seed's kmem_flags_convert makes it GFP_KERNEL | __GFP_HIGH.
- kmalloc of the spl_kmem_alloc_t task descriptor and of the emergency tracking node never
  fail (their cost is charged); the page allocation of an emergency object may fail.
- The emergency rbtree is a dict keyed by address; a lookup or insert is charged
  `emergency_lookup` per tree level (ceil(log2(n + 1))).
- KMC_NOEMERGENCY (cb5c2ac, not in this seed revision): a timed-out grower does not mark the
  cache DEADLOCKED, so callers keep waiting for the slab instead of taking emergency objects.
- The seed never increments skc_slab_fail / skc_slab_create / skc_slab_destroy; they stay 0 as
  in the kernel. The simulator's own counts are reported as `slabs_created` / `slabs_freed`.
- Objects do not really live at addresses inside the vmalloc area's pages; the address is unique
  and in the vmalloc range, and `slab_of` plays the role of the trailing spl_kmem_obj_t.
- spl-0.7 aging: a magazine's skm_age is refreshed by allocations from it (hits and refills),
  not by frees, so a CPU that only frees has an old magazine.
- The spl-0.7 aging IPI (on_each_cpu) is raised on every CPU, runs on the caller's CPU with IRQs
  off, and the caller spins until every CPU has run it, as smp_call_function_many does.
- A failed VERIFY in spl_kmem_cache_create (an alignment that is not a power of two, below 8 or
  above the page size) panics a real kernel; here creation fails with the VERIFY's condition.
- SPL_MAX_KMEM_ORDER_NR_PAGES depends on the kernel's slab allocator (kmem_cache.h): 4 pages
  under SLUB (1 << (PAGE_ALLOC_COSTLY_ORDER - 1)), KMALLOC_MAX_SIZE >> PAGE_SHIFT under SLAB
  (32 pages: the 2.6.17 model's largest kmalloc class is 128 KiB, where a modern SLAB kernel
  has 4 MiB); it follows the backend serving KMC_SLAB caches.
- A KM_NOSLEEP allocation that misses the magazine returns NULL after refilling it (the seed's
  `goto ret` for KM_NOSLEEP); this is the seed's behaviour, kept on purpose.
- The spl-0.6 skc_reclaim callback (none in the seed) is a fixed amount of eviction work around
  timed sleeps that stand for the ARC's mutexes and I/O; it frees none of the cache's objects.
"""


from __future__ import annotations

from typing import Any

from policies.base import CacheSpec, CacheStats, Gen, InvariantError, Policy, Tunable
from policies.registry import builtin
from policies.slabinfo import format_slabinfo
from policies.spl.emergency import SplEmergency
from policies.spl.geometry import SPL_KMEM_CACHE_ALIGN, geometry
from policies.spl.magazine import SplMagazines
from policies.spl.proc import format_spl_slab
from policies.spl.reap import SplReaper
from policies.spl.slab import SplSlabs
from policies.spl.structs import (
    KMC_BIT_DESTROY,
    KMC_FLAG_BITS,
    MAX_ORDER,
    PAGE_ALLOC_COSTLY_ORDER,
    SPL_KMEM_CACHE_DELAY,
    SPL_TASKQ_THREAD_TIMEOUT_MS,
    SplCache,
    SplMagazine,
)
from simcore.cpu import Thread
from simcore.sched import SPL_MAXCLSYSPRI
from simcore.spinlock import SpinLock
from simcore.taskq import Taskq
from simcore.waitqueue import BitFlags, WaitQueue


class SplPolicy(SplMagazines, SplSlabs, SplEmergency, SplReaper, Policy):
    """The SPL kmem cache: per-CPU magazines over vmalloc slabs, asynchronous growth on the
    spl_kmem_cache taskq with HZ/10 deadlock detection and emergency objects."""

    name = "spl"
    summary = ("OpenZFS SPL kmem cache: per-CPU magazines, vmalloc slabs grown on a taskq, "
               "HZ/10 deadlock detection, emergency objects")
    tunables = (
        Tunable("spl_kmem_cache_magazine_size", 0,
                "magazine size (2..256); 0 = by object size (spl_magazine_size)", minimum=0),
        Tunable("spl_kmem_cache_obj_per_slab", 8, "target objects per slab (spl_slab_size)",
                minimum=1),
        Tunable("spl_kmem_cache_max_size", 32, "largest slab in MiB (spl_slab_size)", minimum=1),
        Tunable("spl_kmem_cache_slab_limit", 16384,
                "objects up to this size use the Linux slab (spl_kmem_cache_create)", minimum=0),
        Tunable("spl_kmem_cache_kmem_threads", 4,
                "spl_kmem_cache taskq threads (spl_kmem_cache_init; 1 before 436ad60)",
                minimum=1),
        Tunable("grow_wait_timeout", "HZ/10",
                "spl_cache_grow's wait before DEADLOCKED: 1 tick (e2dcc6e, 2012-08), HZ "
                "(165f13c, 2012-10) or HZ/10 (e50e6cc, 2014-12, the seed)",
                choices=("1", "HZ", "HZ/10")),
        Tunable("grow_wake_order", "clear_then_wake",
                "spl_cache_grow_work: clear GROWING then wake (the seed, zfs#9989 fix) or wake "
                "then clear (before 2adc6b35: woken waiters sleep out the timeout)",
                choices=("clear_then_wake", "wake_then_clear")),
        Tunable("grow_reaping", "wait_on_bit",
                "spl_cache_grow while REAPING: block on KMC_BIT_REAPING (dc1b302, the seed) or "
                "return at once and retry, spinning on skc_lock (before dc1b302)",
                choices=("wait_on_bit", "spin")),
        Tunable("nosleep_rule", "best_effort_emergency",
                "KM_NOSLEEP in spl_cache_grow: a best-effort emergency object before any wait, "
                "never sleeping (93f8abeff0, zfs#14926, seed 000:1015), or waiting for growth "
                "like KM_SLEEP (seed 001, before 2023)",
                choices=("best_effort_emergency", "wait_like_km_sleep")),
        Tunable("skc_lock_irqs_on", "spin_lock",
                "how skc_lock is taken where the seed takes it with IRQs on (zfs#10646): "
                "spin_lock everywhere (the seed), spin_lock_irqsave in __spl_cache_grow only, "
                "or in every such place (000:340, 427, 443, 473, 952, 1080, 1336) (what-ifs)",
                choices=("spin_lock", "irqsave_in_grow", "irqsave_everywhere")),
        Tunable("spl_kmem_cache_age", "off",
                "spl-0.7 aging timer: off (the seed), trylock (d4899f4 fix: skip when "
                "contended) or spin_lock (before d4899f4: spl#210 / zfs#1193)",
                choices=("off", "trylock", "spin_lock")),
        Tunable("spl_fstrans", "seed",
                "PF_MEMALLOC_NOIO on taskq workers and the growth path, KM_PUSHPAGE = "
                "GFP_KERNEL|__GFP_HIGH (the seed) or 2012: the SPL before fstrans, "
                "KM_PUSHPAGE = GFP_NOIO (the reclaim deadlocks of spl-history B1)",
                choices=("seed", "2012")),
        Tunable("kmc_slab_allocator", "slub",
                "the kernel slab allocator behind KMC_SLAB caches: slub (CONFIG_SLUB, the "
                "default since 2.6.23 and the only one since 6.8) or linux_slab (2.6.17 SLAB)",
                choices=("slub", "linux_slab")),
        Tunable("skc_delay", SPL_KMEM_CACHE_DELAY,
                "spl-0.7 aging: seconds before an unused magazine is flushed; the timer runs "
                "every skc_delay/3 s", minimum=1e-6),
        Tunable("skc_reclaim_ns", 0,
                "spl-0.6 reap_now: ns of eviction work of each cache's skc_reclaim callback "
                "(the ARC's) run before the slabs are reclaimed; 0 with no sleeps = no callback "
                "(seed 000 asserts reclaim == NULL)", minimum=0),
        Tunable("skc_reclaim_sleeps", 0,
                "spl-0.6 reap_now: times each skc_reclaim callback blocks (an ARC mutex, an "
                "I/O) while KMC_BIT_REAPING is held", minimum=0),
        Tunable("skc_reclaim_sleep_ns", 0,
                "spl-0.6 reap_now: ns of each of those sleeps", minimum=0),
        Tunable("spl_taskq_thread_timeout_ms", SPL_TASKQ_THREAD_TIMEOUT_MS,
                "spl-taskq.c: an idle dynamic spl_kmem_cache worker exits at most once per this "
                "many ms (taskq_thread_should_stop)", minimum=0),
    )

    def __init__(self, machine: Any, tunables: dict[str, Any] | None = None) -> None:
        super().__init__(machine, tunables)
        m = self.machine
        self._fstrans = self.tun["spl_fstrans"] == "seed"
        self.taskq = Taskq(m, "spl_kmem_cache", nthreads=self.tun["spl_kmem_cache_kmem_threads"],
                           dynamic=True, pri=SPL_MAXCLSYSPRI, memalloc_noio=self._fstrans,
                           idle_timeout=self.tun["spl_taskq_thread_timeout_ms"] * 1_000_000)
        """spl_kmem_cache_taskq: growth and (spl-0.7) aging tasks."""
        self.linux = self._linux_backend()
        """The Linux slab that serves KMC_SLAB caches."""
        hz = m.hz
        self.grow_timeout = {"1": 1, "HZ": hz, "HZ/10": hz // 10}[self.tun["grow_wait_timeout"]] \
            * m.tick_ns
        """spl_cache_grow's wait_event_timeout, ns."""
        self._wake_first = self.tun["grow_wake_order"] == "wake_then_clear"
        self._reap_spin = self.tun["grow_reaping"] == "spin"
        self._nosleep_2023 = self.tun["nosleep_rule"] == "best_effort_emergency"
        irqs_on = self.tun["skc_lock_irqs_on"]
        self._grow_irqsave = irqs_on != "spin_lock"
        """__spl_cache_grow takes skc_lock with spin_lock_irqsave (zfs#10646 what-if)."""
        self._irqsave_everywhere = irqs_on == "irqsave_everywhere"
        """Every other IRQs-on skc_lock site takes it with spin_lock_irqsave (what-if)."""
        self._aging = self.tun["spl_kmem_cache_age"]
        self._aging_on = self._aging != "off"
        self._hits_only = m.batching and not self._aging_on
        """A magazine hit (alloc_fast, free_fast) is its charge and its count, unless the run
        is traced: no skm_age to stamp, no unbatched clock steps."""
        self._reclaim_ns = self.tun["skc_reclaim_ns"]
        self._reclaim_sleeps = self.tun["skc_reclaim_sleeps"]
        self._reclaim_sleep_ns = self.tun["skc_reclaim_sleep_ns"]
        self._costs = m.costs.values
        mt = m.metrics
        self._h_hit = mt.hist("alloc.hit")
        self._h_refill = mt.hist("alloc.refill")
        self._h_grow = mt.hist("alloc.grow")
        self._h_emerg = mt.hist("alloc.emergency")
        self._h_free_hit = mt.hist("free.hit")
        self._h_free_flush = mt.hist("free.flush")
        self._h_wait = mt.hist("spl.grow_wait")
        self._h_runnable = mt.hist("spl.alloc_runnable")
        """Slow-path allocations (past the magazine): each call's time less the time it slept
        in spl_cache_grow's waits (wait_on_bit, wait_event_timeout)."""
        self._is_vmalloc = m.memory.is_vmalloc_addr
        c = self._costs
        self._alloc_hit_ns = c["call"] + c["irq_disable"] + c["magazine_pop"] + c["irq_enable"]
        self._free_hit_ns = c["call"] + c["irq_disable"] + c["magazine_push"] + c["irq_enable"]
        self._hit_pre_ns = c["call"] + c["irq_disable"]
        """Charged before the IRQ-off section of a magazine hit opens (local_irq_disable
        charges its cost, then IRQs are off)."""
        self._alloc_off_ns = c["magazine_pop"] + c["irq_enable"]
        self._free_off_ns = c["magazine_push"] + c["irq_enable"]
        """The IRQ-off sections of the magazine hits: constant lengths."""
        mt.add_fold(self.fold_hits)

    def _linux_backend(self) -> Policy:
        """The embedded Linux slab model `kmc_slab_allocator` names (or the documented
        global_lock stand-in when it is not installed)."""
        try:
            cls = builtin(self.tun["kmc_slab_allocator"])
        except ModuleNotFoundError:
            cls = builtin("global_lock")
        return cls(self.machine, {})

    # --- cache creation -------------------------------------------------------------------
    def create_cache(self, spec: CacheSpec) -> SplCache:
        """spl_kmem_cache_create: KMC_SLAB up to the slab limit (unless KMC_KVMEM is forced),
        else KMC_KVMEM with spl_slab_size geometry and one magazine per possible CPU."""
        m = self.machine
        flags = BitFlags(m, f"{spec.name}->skc_flags")
        for f in spec.flags:
            if f in KMC_FLAG_BITS:
                flags.value |= 1 << KMC_FLAG_BITS[f]
        lock = SpinLock(m, f"{spec.name}->skc_lock")
        waitq = WaitQueue(m, f"{spec.name}->skc_waitq")
        page = m.memory.page_size
        align = SPL_KMEM_CACHE_ALIGN
        if spec.align:
            if spec.align & (spec.align - 1):
                raise ValueError(f"VERIFY(ISP2(align)) failed: align {spec.align}")
            if spec.align < SPL_KMEM_CACHE_ALIGN:
                raise ValueError(f"VERIFY3U(align, >=, SPL_KMEM_CACHE_ALIGN) failed: align "
                                 f"{spec.align} < {SPL_KMEM_CACHE_ALIGN}")
            if spec.align > page:
                raise ValueError(f"VERIFY3U(align, <=, PAGE_SIZE) failed: align {spec.align} > "
                                 f"{page}")
            align = spec.align
        limit = self.tun["spl_kmem_cache_slab_limit"]
        forced = {"KMC_SLAB", "KMC_KVMEM"} & set(spec.flags)
        if not forced:
            use_slab = bool(limit) and spec.size <= limit
            flags.value |= 1 << KMC_FLAG_BITS["KMC_SLAB" if use_slab else "KMC_KVMEM"]
        else:
            use_slab = "KMC_KVMEM" not in forced
        if use_slab:
            max_pages = self.spl_max_kmem_order_nr_pages()
            if spec.size > max_pages * page:
                raise ValueError(f"KMC_SLAB object of {spec.size} bytes is larger than "
                                 f"SPL_MAX_KMEM_ORDER_NR_PAGES * PAGE_SIZE ({max_pages} pages "
                                 f"under {self.linux.name}); spl_kmem_cache_create fails")
            linux = self.linux.cache_create(CacheSpec(spec.name, spec.size, align, 0, 0, ()))
            return SplCache(spec.name, spec, flags, lock, waitq, None, linux_cache=linux)
        geo = geometry(spec.size, align, page, self.tun["spl_kmem_cache_obj_per_slab"],
                       self.tun["spl_kmem_cache_max_size"], self.tun["spl_kmem_cache_magazine_size"])
        skc = SplCache(spec.name, spec, flags, lock, waitq, geo)
        skc.mags = [SplMagazine(cpu.id, geo.mag_size, geo.mag_refill) for cpu in m.cpus]
        skc.hit_alloc_ns = self._alloc_hit_ns + spec.ctor_cost
        skc.hit_free_ns = self._free_hit_ns + spec.dtor_cost
        return skc

    def spl_max_kmem_order_nr_pages(self) -> int:
        """SPL_MAX_KMEM_ORDER_NR_PAGES of kmem_cache.h for the slab allocator behind KMC_SLAB:
        1 << (PAGE_ALLOC_COSTLY_ORDER - 1) under SLUB, KMALLOC_MAX_SIZE >> PAGE_SHIFT under
        SLAB (the 2.6.17 model's largest kmalloc class, 128 KiB; order MAX_ORDER - 1 for the
        global_lock stand-in)."""
        if self.linux.name == "slub":
            return 1 << (PAGE_ALLOC_COSTLY_ORDER - 1)
        if self.linux.name == "linux_slab":
            from policies.linux_slab.geometry import MAX_OBJ_SIZE
            return MAX_OBJ_SIZE // self.machine.memory.page_size
        return 1 << (MAX_ORDER - 1)

    def start(self) -> None:
        """The Linux slab's timers (cache_reap) for the KMC_SLAB caches; spl-0.7: schedule
        the first spl_cache_age of every KVMEM cache."""
        if self.linux.caches:
            self.linux.start()
        if self._aging == "off":
            return
        for skc in self.caches:
            if not skc.is_slab:
                self._schedule_age(skc)
    # --- teardown ---------------------------------------------------------------------------
    def destroy(self, t: Thread, skc: SplCache) -> Gen:
        """spl_kmem_cache_destroy: set KMC_BIT_DESTROY, wait for skc_ref to drop to zero, flush
        every magazine, reclaim, and check that nothing is left."""
        yield from skc.flags.set_bit(t, KMC_BIT_DESTROY)
        while skc.ref:
            yield from t.sleep(self.machine.tick_ns)
        if skc.is_slab:
            yield from self.linux.destroy(t, skc.linux_cache)
        else:
            for skm in skc.mags:
                yield from self.spl_cache_flush(t, skc, skm, len(skm.objs))
            yield from self.spl_slab_reclaim(t, skc)
        left = {"skc_slab_alloc": skc.slab_alloc, "skc_obj_alloc": skc.obj_alloc,
                "skc_slab_total": skc.slab_total, "skc_obj_total": skc.obj_total,
                "skc_obj_emergency": skc.obj_emergency, "skc_linux_alloc": skc.linux_alloc}
        bad = {k: v for k, v in left.items() if v}
        if bad or skc.complete:
            raise InvariantError(f"{skc.name}: destroyed with objects left: {bad}")
        self.fold_hits()
        self.caches.remove(skc)

    # --- statistics -------------------------------------------------------------------------
    def fast_hit_ns(self, skc: SplCache) -> tuple[int, int] | None:
        """A magazine hit's constant cost (alloc_fast / free_fast); None for a KMC_SLAB cache,
        whose hits are the Linux slab's."""
        if skc.linux_cache is not None:
            return None
        return (skc.hit_alloc_ns, skc.hit_free_ns)

    def stats(self, skc: SplCache) -> CacheStats:
        self.fold_hits()
        if skc.is_slab:
            st = self.linux.stats(skc.linux_cache)
            st.extra = {**st.extra, "skc_linux_alloc": skc.linux_alloc}
            return st
        geo = skc.geo
        assert geo is not None
        cached = sum(len(m.objs) for m in skc.mags)
        slab_objs = skc.obj_total - skc.obj_emergency
        empty = 0
        for sks in skc.partial.reversed():
            if sks.ref:
                break
            empty += 1
        page = self.machine.memory.page_size
        return CacheStats(
            name=skc.name, obj_size=skc.spec.size,
            objs_inuse=skc.obj_alloc - cached + skc.obj_emergency, objs_cached=cached,
            objs_free=slab_objs - skc.obj_alloc, objs_emergency=skc.obj_emergency,
            slabs=skc.slab_total, slabs_partial=len(skc.partial) - empty, slabs_empty=empty,
            bytes_slab=skc.slab_total * -(-geo.slab_size // page) * page,
            bytes_emergency=skc.obj_emergency * (page << self._order(skc)),
            bytes_meta=len(skc.mags) * (64 + 8 * geo.mag_size),
            objs_per_slab=geo.slab_objs, pages_per_slab=-(-geo.slab_size // page),
            limit=geo.mag_size, batchcount=geo.mag_refill,
            extra=self.counters(skc))

    def counters(self, skc: SplCache) -> dict[str, int]:
        """Every skc_* counter of the seed, plus the simulator's growth counts."""
        return {"skc_flags": skc.flags.value, "skc_slab_fail": skc.slab_fail,
                "skc_slab_create": skc.slab_create, "skc_slab_destroy": skc.slab_destroy,
                "skc_slab_total": skc.slab_total, "skc_slab_alloc": skc.slab_alloc,
                "skc_slab_max": skc.slab_max, "skc_obj_total": skc.obj_total,
                "skc_obj_alloc": skc.obj_alloc, "skc_obj_max": skc.obj_max,
                "skc_obj_deadlock": skc.obj_deadlock, "skc_obj_emergency": skc.obj_emergency,
                "skc_obj_emergency_max": skc.obj_emergency_max,
                "skc_linux_alloc": skc.linux_alloc, "grow_started": skc.grow_started,
                "slabs_created": skc.slabs_created, "slabs_freed": skc.slabs_freed,
                "age_skipped": skc.age_skipped,
                "alloc_runnable_in_flight_ns": self._runnable_in_flight(skc)}

    def _runnable_in_flight(self, skc: SplCache) -> int:
        """The longest time a slow-path allocation on `skc` still in progress has been
        runnable, ns: since it missed the magazine, less the time it slept in spl_cache_grow
        (a sleep in progress included)."""
        now = self.machine.env.now
        best = 0
        for t in self.machine.threads:
            call = getattr(t, "spl_alloc", None)
            if call is None or call[0] is not skc:
                continue
            b = t.blocked_on
            queued = isinstance(b, tuple) and b[0] == "cpu"
            asleep = now - t.blocked_since if b is not None and not queued else 0
            best = max(best, now - call[1] - getattr(t, "spl_slept", 0) - asleep)
        return best

    def check_invariants(self) -> None:
        """Slab and object counters agree with the slabs; list membership matches fullness;
        empty slabs form the tail of the partial list; magazines within their size."""
        for skc in self.caches:
            if skc.is_slab:
                continue
            slabs = list(skc.partial) + list(skc.complete)
            if len(slabs) != skc.slab_total:
                raise InvariantError(f"{skc.name}: {len(slabs)} slabs, skc_slab_total "
                                     f"{skc.slab_total}")
            if sum(s.objs for s in slabs) + skc.obj_emergency != skc.obj_total:
                raise InvariantError(f"{skc.name}: skc_obj_total {skc.obj_total} disagrees")
            if sum(s.ref for s in slabs) != skc.obj_alloc:
                raise InvariantError(f"{skc.name}: slab refs != skc_obj_alloc {skc.obj_alloc}")
            if sum(1 for s in slabs if s.ref) != skc.slab_alloc:
                raise InvariantError(f"{skc.name}: skc_slab_alloc {skc.slab_alloc} disagrees")
            if len(skc.emergency) != skc.obj_emergency:
                raise InvariantError(f"{skc.name}: emergency tree != skc_obj_emergency")
            for s in slabs:
                if s.ref + len(s.free) != s.objs:
                    raise InvariantError(f"{skc.name}: slab ref + free != objs")
            for s in skc.complete:
                if s.ref != s.objs:
                    raise InvariantError(f"{skc.name}: non-full slab on the complete list")
            seen_empty = False
            for s in skc.partial:
                if s.ref == s.objs:
                    raise InvariantError(f"{skc.name}: full slab on the partial list")
                if s.ref == 0:
                    seen_empty = True
                elif seen_empty:
                    raise InvariantError(f"{skc.name}: empty slab before a used one")
            cached = sum(len(m.objs) for m in skc.mags)
            if cached > skc.obj_alloc:
                raise InvariantError(f"{skc.name}: magazines hold more than skc_obj_alloc")
            for m in skc.mags:
                if len(m.objs) > m.size:
                    raise InvariantError(f"{skc.name}: magazine {m.cpu} over its size")
        self.linux.check_invariants()

    def reports(self) -> dict[str, str]:
        """/proc/spl/kmem/slab for every cache; /proc/slabinfo of the Linux slab behind the
        KMC_SLAB caches."""
        out = {"spl_slab.txt": format_spl_slab(self, self.caches)}
        linux = self.linux.reports()
        if "slabinfo.txt" in linux:
            out["slabinfo.txt"] = linux["slabinfo.txt"]
        else:
            out["slabinfo.txt"] = format_slabinfo([self.linux.stats(c)
                                                   for c in self.linux.caches])
        for name, text in linux.items():
            out.setdefault(name, text)
        return out
