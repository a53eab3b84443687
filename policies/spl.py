"""`spl`: the OpenZFS SPL kmem cache (module/os/linux/spl/spl-kmem-cache.c, seeds/001).

Read it side by side with the seed; the functions below carry the seed's names and make its
decisions in its order:

- cache creation: `create_cache` (spl_kmem_cache_create) picks KMC_SLAB for objects up to
  `spl_kmem_cache_slab_limit` and KMC_KVMEM above; KVMEM caches get `spl_slab_size` geometry and
  per-CPU magazines (`spl_magazine_create`), KMC_SLAB caches a Linux slab cache.
- allocation: `alloc` (spl_kmem_cache_alloc) -> `spl_cache_refill` -> `spl_cache_grow` ->
  the taskq's `spl_cache_grow_work` -> `__spl_cache_grow` -> `spl_slab_alloc`;
  `spl_emergency_alloc` once the cache is KMC_BIT_DEADLOCKED.
- free: `free` (spl_kmem_cache_free) -> `spl_emergency_free` / `spl_cache_flush` ->
  `spl_cache_shrink`, then `spl_slab_reclaim`.
- reaping: `reap` (spl_kmem_cache_reap_now), `spl_kmem_reap`; the spl-0.7 aging timer
  (`spl_cache_age` / `spl_magazine_age`) as an option.
- teardown: `destroy` (spl_kmem_cache_destroy).

KMC_SLAB caches are served by an embedded instance of the `linux_slab` policy (the Linux SLAB
model) when it is installed, else by the `global_lock` baseline as a stand-in; the SPL only
counts their objects in `skc_linux_alloc`, as the seed does.

Tunables: the seed's module parameters with their names and defaults, plus switches that select
historical code for the deadlock scenarios (each says which commit it models).

Deviations from the seed (each is also noted at the code):
- `spl_fstrans_mark` is not modelled: the growth worker's vmalloc may enter direct reclaim and
  run the modelled reclaim dependencies (the page-table allocation inside vmalloc ignored the
  caller's flags on the kernels of spl-history B1), which is what the reclaim-deadlock scenario
  needs.
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
- A KM_NOSLEEP allocation that misses the magazine returns NULL after refilling it (the seed's
  `goto ret` for KM_NOSLEEP); this is the seed's behaviour, kept on purpose.
"""

from __future__ import annotations

import math
from typing import Any

import simpy

from policies.base import CacheSpec, CacheStats, Gen, InvariantError, Policy, Tunable
from policies.registry import builtin
from policies.spl_geometry import geometry
from policies.spl_report import format_spl_slab
from policies.spl_structs import (
    KMC_BIT_DEADLOCKED,
    KMC_BIT_DESTROY,
    KMC_BIT_GROWING,
    KMC_BIT_NOEMERGENCY,
    KMC_BIT_REAPING,
    KMC_FLAG_BITS,
    SplCache,
    SplMagazine,
    SplSlab,
)
from simcore.cpu import Thread
from simcore.flags import KM_NOSLEEP
from simcore.spinlock import SpinLock
from simcore.taskq import Taskq
from simcore.waitqueue import BitFlags, WaitQueue

ENOMEM, EAGAIN, EEXIST, ENOENT = 12, 11, 17, 2

SPL_KMEM_CACHE_DELAY = 15.0
"""spl-0.7: seconds a magazine may sit unused before the aging timer flushes it (skc_delay)."""


class SplPolicy(Policy):
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
        Tunable("spl_kmem_cache_reclaim", 0,
                "module parameter of the seed, read by no modelled path (kept for completeness)",
                choices=(0, 1)),
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
        Tunable("nosleep_rule", "seed",
                "KM_NOSLEEP in spl_cache_grow: may wait like KM_SLEEP (the seed) or never waits "
                "and takes a best-effort emergency object (93f8abeff0, zfs#14926, 2023)",
                choices=("seed", "2023")),
        Tunable("grow_lock", "spin_lock",
                "__spl_cache_grow takes skc_lock with spin_lock, IRQs on (the seed; zfs#10646) "
                "or with spin_lock_irqsave (what-if)", choices=("spin_lock", "spin_lock_irqsave")),
        Tunable("spl_kmem_cache_age", "off",
                "spl-0.7 aging timer: off (the seed), trylock (d4899f4 fix: skip when "
                "contended) or spin_lock (before d4899f4: spl#210 / zfs#1193)",
                choices=("off", "trylock", "spin_lock")),
        Tunable("skc_delay", SPL_KMEM_CACHE_DELAY,
                "spl-0.7 aging: seconds before an unused magazine is flushed; the timer runs "
                "every skc_delay/3 s", minimum=1e-6),
    )

    def __init__(self, machine: Any, tunables: dict[str, Any] | None = None) -> None:
        super().__init__(machine, tunables)
        m = self.machine
        self.taskq = Taskq(m, "spl_kmem_cache", nthreads=self.tun["spl_kmem_cache_kmem_threads"],
                           dynamic=True)
        """spl_kmem_cache_taskq: growth and (spl-0.7) aging tasks."""
        self.linux = self._linux_backend()
        """The Linux slab that serves KMC_SLAB caches."""
        hz = m.hz
        self.grow_timeout = {"1": 1, "HZ": hz, "HZ/10": hz // 10}[self.tun["grow_wait_timeout"]] \
            * m.tick_ns
        """spl_cache_grow's wait_event_timeout, ns."""
        self._wake_first = self.tun["grow_wake_order"] == "wake_then_clear"
        self._reap_spin = self.tun["grow_reaping"] == "spin"
        self._nosleep_2023 = self.tun["nosleep_rule"] == "2023"
        self._grow_irqsave = self.tun["grow_lock"] == "spin_lock_irqsave"
        self._aging = self.tun["spl_kmem_cache_age"]
        self._costs = m.costs.values
        mt = m.metrics
        self._h_hit = mt.hist("alloc.hit")
        self._h_refill = mt.hist("alloc.refill")
        self._h_grow = mt.hist("alloc.grow")
        self._h_emerg = mt.hist("alloc.emergency")
        self._h_free_hit = mt.hist("free.hit")
        self._h_free_flush = mt.hist("free.flush")
        self._h_wait = mt.hist("spl.grow_wait")
        self._is_vmalloc = m.memory.is_vmalloc_addr
        c = self._costs
        self._alloc_hit_ns = c["call"] + c["irq_disable"] + c["magazine_pop"] + c["irq_enable"]
        self._free_hit_ns = c["call"] + c["irq_disable"] + c["magazine_push"] + c["irq_enable"]

    def _linux_backend(self) -> Policy:
        """The embedded Linux slab model (or the documented global_lock stand-in)."""
        try:
            cls = builtin("linux_slab")
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
        limit = self.tun["spl_kmem_cache_slab_limit"]
        forced = {"KMC_SLAB", "KMC_KVMEM"} & set(spec.flags)
        if not forced:
            use_slab = bool(limit) and spec.size <= limit
            flags.value |= 1 << KMC_FLAG_BITS["KMC_SLAB" if use_slab else "KMC_KVMEM"]
        else:
            use_slab = "KMC_SLAB" in forced
        align = max(spec.align, 8)
        if use_slab:
            linux = self.linux.cache_create(CacheSpec(spec.name, spec.size, align, 0, 0, ()))
            return SplCache(spec.name, spec, flags, lock, waitq, None, linux_cache=linux)
        geo = geometry(spec.size, align, m.memory.page_size, self.tun["spl_kmem_cache_obj_per_slab"],
                       self.tun["spl_kmem_cache_max_size"], self.tun["spl_kmem_cache_magazine_size"])
        skc = SplCache(spec.name, spec, flags, lock, waitq, geo)
        skc.mags = [SplMagazine(cpu.id, geo.mag_size, geo.mag_refill) for cpu in m.cpus]
        return skc

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

    # --- allocation -------------------------------------------------------------------------
    def alloc(self, t: Thread, skc: SplCache, flags: int) -> Gen:
        """spl_kmem_cache_alloc: KMC_SLAB caches go to the Linux slab (KM_SLEEP retries until it
        succeeds); otherwise IRQs off, pop this CPU's magazine, or spl_cache_refill and restart
        (a KM_NOSLEEP caller returns what the refill returned)."""
        start = t.now
        t.charge("call")
        if skc.is_slab:
            while True:
                obj = yield from self.linux.alloc(t, skc.linux_cache, flags)
                if obj is not None or flags & KM_NOSLEEP:
                    break
            if obj is not None:
                skc.linux_alloc += 1
                self._ctor(t, skc)
            return obj
        t.local_irq_disable()
        hist = self._h_hit
        while True:
            skm = skc.mags[t.cpu.id]
            if skm.objs:
                obj = skm.objs.pop()
                t.charge("magazine_pop")
                if self._aging != "off":
                    skm.age = t.now
                break
            t.spl_grew = False
            obj = yield from self.spl_cache_refill(t, skc, skm, flags)
            hist = self._h_grow if t.spl_grew or hist is self._h_grow else self._h_refill
            if obj is not None:
                hist = self._h_emerg
                break
            if flags & KM_NOSLEEP:
                break
        yield from t.local_irq_enable()
        if obj is not None:
            self._ctor(t, skc)
        hist.record(t.now - start)
        long_wait = getattr(t, "spl_long_wait", 0)
        if long_wait:
            self.machine.metrics.count("spl.alloc_long_wait_ns", long_wait)
            t.spl_long_wait = 0
        return obj

    def alloc_fast(self, t: Thread, skc: SplCache, flags: int) -> int | None:
        """The magazine hit of spl_kmem_cache_alloc as a plain call (no interrupt due before
        IRQs are enabled again); None when the generator path must run."""
        if skc.linux_cache is not None:
            mark = t.mark()
            t.charge("call")
            obj = self.linux.alloc_fast(t, skc.linux_cache, flags)
            if obj is None:
                t.rollback(mark)
                return None
            skc.linux_alloc += 1
            self._ctor(t, skc)
            return obj
        objs = skc.mags[t.cpu.id].objs
        if not objs or not t.irq_free_for(self._alloc_hit_ns):
            return None
        start = t.pending
        t.charge("call")
        t.local_irq_disable()
        obj = objs.pop()
        t.charge("magazine_pop")
        if self._aging != "off":
            skc.mags[t.cpu.id].age = t.now
        t.local_irq_enable_fast()
        self._ctor(t, skc)
        self._h_hit.record(t.pending - start)
        return obj

    def _ctor(self, t: Thread, skc: SplCache) -> None:
        """The constructor runs on every allocation (spl_kmem_cache_alloc, label ret)."""
        if skc.spec.ctor_cost:
            t.charge_ns(skc.spec.ctor_cost)

    def spl_cache_refill(self, t: Thread, skc: SplCache, skm: SplMagazine, flags: int) -> Gen:
        """spl_cache_refill (IRQs off): under skc_lock take up to min(refill, size - avail)
        objects from the head of the partial list, moving slabs that become full to the
        complete list; with no partial slab drop the lock, enable IRQs and spl_cache_grow.
        Returns an emergency object for the caller, or None (the caller restarts)."""
        refill = min(skm.refill, skm.size - len(skm.objs))
        yield from skc.lock.lock(t)
        while refill > 0:
            if not skc.partial:
                yield from skc.lock.unlock(t)
                yield from t.local_irq_enable()
                rc, obj = yield from self.spl_cache_grow(t, skc, flags)
                t.local_irq_disable()
                if rc == 0 and obj is not None:
                    return obj
                if rc:
                    return None
                if skm is not skc.mags[t.cpu.id]:
                    return None
                refill = min(refill, skm.size - len(skm.objs))
                yield from skc.lock.lock(t)
                continue
            sks = skc.partial.head
            assert sks is not None
            while sks.ref < sks.objs and refill > 0:
                refill -= 1
                skm.objs.append(self.spl_cache_obj(t, skc, sks))
            if sks.ref == sks.objs:
                skc.partial.remove(sks)
                skc.complete.add(sks)
                t.charge("list_op")
        if self._aging != "off":
            skm.age = t.now
        yield from skc.lock.unlock(t)
        return None

    def spl_cache_obj(self, t: Thread, skc: SplCache, sks: SplSlab) -> int:
        """spl_cache_obj: take the first object off the slab's free list (skc_lock held)."""
        obj = sks.free.pop()
        t.charge("object_move")
        sks.age = t.now
        sks.ref += 1
        skc.obj_alloc += 1
        if skc.obj_alloc > skc.obj_max:
            skc.obj_max = skc.obj_alloc
        if sks.ref == 1:
            skc.slab_alloc += 1
            if skc.slab_alloc > skc.slab_max:
                skc.slab_max = skc.slab_alloc
        return obj

    def spl_cache_grow(self, t: Thread, skc: SplCache, flags: int) -> Gen:
        """spl_cache_grow (IRQs on, may sleep). Returns (rc, emergency object or None):
        wait for a reaper and return -EAGAIN; the first caller to set KMC_BIT_GROWING
        dispatches spl_cache_grow_work; a DEADLOCKED cache hands out an emergency object;
        otherwise wait up to HZ/10 for GROWING to clear and, on a timeout with GROWING still
        set, mark the cache DEADLOCKED. Every wait returns -ENOMEM (the caller restarts)."""
        bits = skc.flags
        t.spl_grew = True
        if bits.peek(KMC_BIT_REAPING):
            if self._reap_spin:
                t.charge("atomic_op")
                return -EAGAIN, None
            yield from bits.wait_on_bit(t, KMC_BIT_REAPING)
            return -EAGAIN, None
        if self._nosleep_2023 and flags & KM_NOSLEEP:
            return (yield from self.spl_emergency_alloc(t, skc, flags))
        was_growing = yield from bits.test_and_set_bit(t, KMC_BIT_GROWING)
        if not was_growing:
            t.charge("kmalloc")
            skc.ref += 1
            skc.grow_started += 1
            self.machine.metrics.event("grow_start", cache=skc.name, cpu=t.cpu.id,
                                       thread=t.name)
            tid = yield from self.taskq.dispatch(t, self.spl_cache_grow_work, skc, flags)
            task = self.taskq.tasks.get(tid)
            skc.waitq.wakers = [task] if task is not None else []
        if bits.peek(KMC_BIT_DEADLOCKED):
            return (yield from self.spl_emergency_alloc(t, skc, flags))
        yield from t.sync()
        begin = self.machine.env.now
        remaining = yield from skc.waitq.wait_event_timeout(
            t, lambda: not bits.value >> KMC_BIT_GROWING & 1, self.grow_timeout)
        waited = self.machine.env.now - begin
        self._h_wait.record(waited)
        mt = self.machine.metrics
        mt.count("spl.grow_wait_ns", waited)
        if waited >= 100_000_000:
            mt.count("spl.grow_wait_long_ns", waited)
            t.spl_long_wait = getattr(t, "spl_long_wait", 0) + waited
        if not remaining:
            yield from skc.lock.lock(t)
            if bits.peek(KMC_BIT_GROWING) and not bits.peek(KMC_BIT_NOEMERGENCY):
                if not bits.peek(KMC_BIT_DEADLOCKED):
                    mt.event("deadlocked_set", cache=skc.name, cpu=t.cpu.id, thread=t.name,
                             waited=waited)
                bits.value |= 1 << KMC_BIT_DEADLOCKED
                t.charge("atomic_op")
                skc.obj_deadlock += 1
            yield from skc.lock.unlock(t)
        return -ENOMEM, None

    def spl_cache_grow_work(self, w: Thread, skc: SplCache, flags: int) -> Gen:
        """spl_cache_grow_work (taskq worker): __spl_cache_grow, drop the cache reference,
        clear KMC_BIT_GROWING and wake the waiters if a slab was added. With
        grow_wake_order = wake_then_clear the wake-up comes first (before 2adc6b35)."""
        task = getattr(w, "task", None)
        self.machine.metrics.event("grow_run", cache=skc.name, cpu=w.cpu.id, thread=w.name,
                                   queued=w.now - task.dispatched_at if task else 0)
        error = yield from self.__spl_cache_grow(w, skc, flags)
        skc.ref -= 1
        w.charge("atomic_op")
        if self._wake_first:
            if error == 0:
                yield from skc.waitq.wake_up_all(w)
            yield from skc.flags.clear_bit(w, KMC_BIT_GROWING)
        else:
            yield from skc.flags.clear_bit(w, KMC_BIT_GROWING)
            if error == 0:
                yield from skc.waitq.wake_up_all(w)
        skc.waitq.wakers = []
        w.charge("kmalloc")

    def __spl_cache_grow(self, w: Thread, skc: SplCache, flags: int) -> Gen:
        """__spl_cache_grow: spl_slab_alloc, then under skc_lock link the slab at the tail of
        the partial list and clear KMC_BIT_DEADLOCKED. Returns 0 or -ENOMEM."""
        sks = yield from self.spl_slab_alloc(w, skc, flags)
        if self._grow_irqsave:
            irqf = yield from skc.lock.lock_irqsave(w)
        else:
            yield from skc.lock.lock(w)
        if sks is not None:
            skc.slab_total += 1
            skc.obj_total += sks.objs
            skc.partial.add_tail(sks)
            w.charge("list_op")
            if skc.flags.peek(KMC_BIT_DEADLOCKED):
                self.machine.metrics.event("deadlocked_clear", cache=skc.name, cpu=w.cpu.id,
                                           emergency=skc.obj_emergency)
            skc.flags.value &= ~(1 << KMC_BIT_DEADLOCKED)
            w.charge("atomic_op")
        if self._grow_irqsave:
            yield from skc.lock.unlock_irqrestore(w, irqf)
        else:
            yield from skc.lock.unlock(w)
        self.machine.metrics.event("grow_end", cache=skc.name, cpu=w.cpu.id,
                                   ok=sks is not None)
        return -ENOMEM if sks is None else 0

    def spl_slab_alloc(self, w: Thread, skc: SplCache, flags: int) -> Gen:
        """spl_slab_alloc: kv_alloc (vmalloc of the slab size, which takes the global vmap
        lock and may reclaim), then lay out the header and thread every object on the slab's
        free list in address order."""
        geo = skc.geo
        assert geo is not None
        base = yield from self.machine.memory.vmalloc(w, geo.slab_size, flags)
        if base is None:
            return None
        first = base + geo.sks_size
        sks = SplSlab(base, geo.slab_objs, age=w.now)
        sks.free = [first + i * geo.obj_stride for i in range(geo.slab_objs - 1, -1, -1)]
        w.charge("object_move", geo.slab_objs)
        for obj in sks.free:
            skc.slab_of[obj] = sks
        skc.slabs_created += 1
        return sks

    # --- emergency objects ------------------------------------------------------------------
    def _tree_levels(self, skc: SplCache) -> int:
        return max(1, math.ceil(math.log2(len(skc.emergency) + 1)))

    def spl_emergency_alloc(self, t: Thread, skc: SplCache, flags: int) -> Gen:
        """spl_emergency_alloc: last chance on the partial list (-EEXIST), then a tracking node
        and a page allocation of the object's order, inserted into the emergency tree under
        skc_lock; counts skc_obj_total, skc_obj_emergency and its maximum."""
        yield from skc.lock.lock(t)
        empty = not skc.partial
        yield from skc.lock.unlock(t)
        if not empty:
            return -EEXIST, None
        t.charge("kmalloc")
        order = self._order(skc)
        obj = yield from self.machine.memory.alloc_pages(t, order, flags)
        if obj is None:
            return -ENOMEM, None
        yield from skc.lock.lock(t)
        t.charge("emergency_lookup", self._tree_levels(skc))
        skc.emergency[obj] = order
        skc.obj_total += 1
        skc.obj_emergency += 1
        if skc.obj_emergency > skc.obj_emergency_max:
            skc.obj_emergency_max = skc.obj_emergency
        yield from skc.lock.unlock(t)
        self.machine.metrics.event("emergency_alloc", cache=skc.name, cpu=t.cpu.id,
                                   outstanding=skc.obj_emergency)
        return 0, obj

    def spl_emergency_free(self, t: Thread, skc: SplCache, obj: int) -> Gen:
        """spl_emergency_free: find the object in the tree under skc_lock, unlink it and free
        its pages; -ENOENT if it is not an emergency object."""
        yield from skc.lock.lock(t)
        t.charge("emergency_lookup", self._tree_levels(skc))
        order = skc.emergency.pop(obj, None)
        if order is not None:
            skc.obj_emergency -= 1
            skc.obj_total -= 1
        yield from skc.lock.unlock(t)
        if order is None:
            return -ENOENT
        yield from self.machine.memory.free_pages(t, obj, order)
        t.charge("kmalloc")
        self.machine.metrics.event("emergency_free", cache=skc.name, cpu=t.cpu.id,
                                   outstanding=skc.obj_emergency)
        return 0

    def _order(self, skc: SplCache) -> int:
        """get_order(skc_obj_size)."""
        pages = -(-skc.spec.size // self.machine.memory.page_size)
        return max(0, (pages - 1).bit_length())

    # --- free -------------------------------------------------------------------------------
    def free(self, t: Thread, skc: SplCache, obj: int) -> Gen:
        """spl_kmem_cache_free: destructor; KMC_SLAB objects go back to the Linux slab; a
        non-vmalloc address is checked against the emergency tree when the cache has emergency
        objects; otherwise IRQs saved, push onto this CPU's magazine, flushing its oldest
        `refill` objects first when it is full, and reclaim empty slabs after IRQs are
        restored."""
        start = t.now
        t.charge("call")
        if skc.spec.dtor_cost:
            t.charge_ns(skc.spec.dtor_cost)
        if skc.is_slab:
            yield from self.linux.free(t, skc.linux_cache, obj)
            skc.linux_alloc -= 1
            return
        if not self._is_vmalloc(obj):
            yield from skc.lock.lock(t)
            do_emergency = skc.obj_emergency > 0
            yield from skc.lock.unlock(t)
            if do_emergency and (yield from self.spl_emergency_free(t, skc, obj)) == 0:
                self._h_free_flush.record(t.now - start)
                return
        irqf = t.local_irq_save()
        skm = skc.mags[t.cpu.id]
        do_reclaim = False
        if len(skm.objs) >= skm.size:
            yield from self.spl_cache_flush(t, skc, skm, skm.refill)
            do_reclaim = True
        skm.objs.append(obj)
        t.charge("magazine_push")
        yield from t.local_irq_restore(irqf)
        if do_reclaim:
            yield from self.spl_slab_reclaim(t, skc)
            self._h_free_flush.record(t.now - start)
        else:
            self._h_free_hit.record(t.now - start)

    def free_fast(self, t: Thread, skc: SplCache, obj: int) -> bool:
        """The magazine push of spl_kmem_cache_free as a plain call: a vmalloc (slab) object,
        room in the magazine and no interrupt due; False when the generator path must run."""
        dtor = skc.spec.dtor_cost
        if skc.linux_cache is not None:
            mark = t.mark()
            t.charge("call")
            if dtor:
                t.charge_ns(dtor)
            if not self.linux.free_fast(t, skc.linux_cache, obj):
                t.rollback(mark)
                return False
            skc.linux_alloc -= 1
            return True
        skm = skc.mags[t.cpu.id]
        if (len(skm.objs) >= skm.size or not self._is_vmalloc(obj)
                or not t.irq_free_for(self._free_hit_ns + dtor)):
            return False
        start = t.pending
        t.charge("call")
        if dtor:
            t.charge_ns(dtor)
        was_off = t.local_irq_save()
        skm.objs.append(obj)
        t.charge("magazine_push")
        t.local_irq_restore_fast(was_off)
        self._h_free_hit.record(t.pending - start)
        return True

    def spl_cache_flush(self, t: Thread, skc: SplCache, skm: SplMagazine, flush: int) -> Gen:
        """spl_cache_flush: under skc_lock return the magazine's first (oldest) min(flush,
        avail) objects to their slabs and shift the rest down."""
        yield from skc.lock.lock(t)
        self._flush_locked(t, skc, skm, flush)
        yield from skc.lock.unlock(t)

    def _flush_locked(self, t: Thread, skc: SplCache, skm: SplMagazine, flush: int) -> None:
        count = min(flush, len(skm.objs))
        for obj in skm.objs[:count]:
            self.spl_cache_shrink(t, skc, obj)
        del skm.objs[:count]

    def spl_cache_shrink(self, t: Thread, skc: SplCache, obj: int) -> None:
        """spl_cache_shrink (skc_lock held): the object goes back on its slab's free list; a
        slab that stops being full moves to the head of the partial list, one that empties to
        its tail."""
        sks = skc.slab_of[obj]
        sks.free.append(obj)
        t.charge("object_move")
        sks.age = t.now
        sks.ref -= 1
        skc.obj_alloc -= 1
        if sks.ref == sks.objs - 1:
            sks.on.remove(sks)
            skc.partial.add(sks)
            t.charge("list_op")
        if sks.ref == 0:
            skc.partial.remove(sks)
            skc.partial.add_tail(sks)
            t.charge("list_op")
            skc.slab_alloc -= 1

    def spl_slab_reclaim(self, t: Thread, skc: SplCache) -> Gen:
        """spl_slab_reclaim: under skc_lock unlink every empty slab from the tail of the
        partial list, then vfree them outside the lock."""
        victims = []
        yield from skc.lock.lock(t)
        for sks in skc.partial.reversed():
            if sks.ref > 0:
                break
            skc.obj_total -= sks.objs
            skc.slab_total -= 1
            skc.partial.remove(sks)
            t.charge("list_op")
            victims.append(sks)
        yield from skc.lock.unlock(t)
        for sks in victims:
            for obj in sks.free:
                del skc.slab_of[obj]
            yield from self.machine.memory.vfree(t, sks.base)
            skc.slabs_freed += 1
        if victims:
            self.machine.metrics.event("slab_reclaim", cache=skc.name, cpu=t.cpu.id,
                                       slabs=len(victims))

    # --- reaping ----------------------------------------------------------------------------
    def reap(self, t: Thread, skc: SplCache) -> Gen:
        """spl_kmem_cache_reap_now: (not for KMC_SLAB caches) unless another reaper holds
        KMC_BIT_REAPING, flush this CPU's magazine with IRQs saved, reclaim empty slabs, clear
        the bit and wake its waiters."""
        if skc.is_slab:
            return
        skc.ref += 1
        t.charge("atomic_op")
        busy = yield from skc.flags.test_and_set_bit(t, KMC_BIT_REAPING)
        if not busy:
            irqf = t.local_irq_save()
            skm = skc.mags[t.cpu.id]
            flushed = len(skm.objs)
            yield from self.spl_cache_flush(t, skc, skm, flushed)
            yield from t.local_irq_restore(irqf)
            yield from self.spl_slab_reclaim(t, skc)
            yield from skc.flags.clear_bit(t, KMC_BIT_REAPING)
            yield from skc.flags.wake_up_bit(t, KMC_BIT_REAPING)
            self.machine.metrics.event("reap", cache=skc.name, cpu=t.cpu.id, flushed=flushed)
        skc.ref -= 1
        t.charge("atomic_op")

    def spl_kmem_reap(self, t: Thread) -> Gen:
        """spl_kmem_reap: spl_kmem_cache_reap_now on every cache."""
        for skc in list(self.caches):
            yield from self.reap(t, skc)

    # spl-0.7 aging ------------------------------------------------------------------------
    def _schedule_age(self, skc: SplCache) -> None:
        """taskq_dispatch_delay of spl_cache_age skc_delay/3 from now."""
        delay = int(self.tun["skc_delay"] * 1e9) // 3

        def fire(_ev: object) -> None:
            if not skc.flags.peek(KMC_BIT_DESTROY):
                skc.taskqid = self.taskq.dispatch_nowait(self.spl_cache_age, skc)

        self.machine.env.timeout(delay).callbacks.append(fire)

    def spl_cache_age(self, w: Thread, skc: SplCache) -> Gen:
        """spl-0.7 spl_cache_age (taskq): on_each_cpu(spl_magazine_age), waiting until every
        CPU has run it, then re-dispatch itself skc_delay/3 later."""
        m = self.machine
        done = [m.env.event() for _ in m.cpus]
        yield from w.sync()
        for cpu in m.cpus:
            if cpu is not w.cpu:
                m.raise_irq(cpu.id, self._age_ipi(skc, done[cpu.id]), "spl_magazine_age")
        w.charge("atomic_op", len(m.cpus) - 1)
        was_off = w.local_irq_save()
        yield from self.spl_magazine_age(w, skc)
        yield from w.local_irq_restore(was_off)
        done[w.cpu.id].succeed()
        yield from w.sync()
        pending = [ev for ev in done if not ev.triggered]
        if pending:
            w.spinning = ("smp_call_function_many", skc.name)
            w.blocked_on = ("ipi", "smp_call_function_many")
            w.blocked_since = m.env.now
            start = m.env.now
            all_done = m.env.all_of(pending)
            while True:
                try:
                    yield all_done
                    break
                except simpy.Interrupt:
                    yield from w.deliver_irqs()
            w.cpu.busy_ns += m.env.now - start
            w.spinning = None
            w.blocked_on = None
        if not skc.flags.peek(KMC_BIT_DESTROY):
            self._schedule_age(skc)

    def _age_ipi(self, skc: SplCache, done: Any) -> Any:
        def handler(t: Thread) -> Gen:
            yield from self.spl_magazine_age(t, skc)
            done.succeed()
        return handler

    def spl_magazine_age(self, t: Thread, skc: SplCache) -> Gen:
        """spl-0.7 spl_magazine_age (IRQ context): flush `refill` objects of this CPU's
        magazine if it has not been used for skc_delay; with the d4899f4 fix only if skc_lock
        can be taken at once (the handler may have interrupted its holder)."""
        skm = skc.mags[t.cpu.id]
        delay = int(self.tun["skc_delay"] * 1e9)
        if not skm.objs or t.now - skm.age <= delay:
            return
        if self._aging == "trylock":
            got = yield from skc.lock.trylock(t)
            if not got:
                skc.age_skipped += 1
                self.machine.metrics.event("age_skip", cache=skc.name, cpu=t.cpu.id)
                return
            self._flush_locked(t, skc, skm, skm.refill)
            yield from skc.lock.unlock(t)
        else:
            yield from self.spl_cache_flush(t, skc, skm, skm.refill)
        self.machine.metrics.event("magazine_age", cache=skc.name, cpu=t.cpu.id)

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
        self.caches.remove(skc)

    # --- statistics -------------------------------------------------------------------------
    def stats(self, skc: SplCache) -> CacheStats:
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
                "age_skipped": skc.age_skipped}

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
            from experiments.reports import format_slabinfo
            out["slabinfo.txt"] = format_slabinfo([self.linux.stats(c)
                                                   for c in self.linux.caches])
        for name, text in linux.items():
            out.setdefault(name, text)
        return out
