"""The SPL's per-CPU magazines: spl_kmem_cache_alloc / spl_kmem_cache_free with their
refill (spl_cache_refill) and flush (spl_cache_flush) paths (seed 000, spl-kmem-cache.c)."""

from __future__ import annotations

from typing import Any

from policies.base import Gen
from policies.spl.structs import (
    SplCache,
    SplMagazine,
    SplSlab,
)
from simcore.cpu import Thread
from simcore.flags import KM_NOIO, KM_NOSLEEP, KM_PUSHPAGE
from simcore.memory import VMALLOC_BASE, VMALLOC_END


class SplMagazines:
    """Magazine paths of SplPolicy: alloc, free, refill and flush."""

    # --- allocation -------------------------------------------------------------------------
    def alloc(self, t: Thread, skc: SplCache, flags: int) -> Gen:
        """spl_kmem_cache_alloc: KMC_SLAB caches go to the Linux slab (KM_SLEEP retries until it
        succeeds); otherwise IRQs off, pop this CPU's magazine, or spl_cache_refill and restart
        (a KM_NOSLEEP caller returns what the refill returned)."""
        start = t.now
        t.charge("call")
        if flags & KM_PUSHPAGE and not self._fstrans:
            flags |= KM_NOIO  # the 2012 SPL: KM_PUSHPAGE was GFP_NOIO
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
        outer = None
        while True:
            skm = skc.mags[t.cpu.id]
            if skm.objs:
                obj = skm.objs.pop()
                t.charge("magazine_pop")
                if self._aging != "off":
                    skm.age = t.now
                break
            if outer is None:
                # an interrupt handler allocating on this thread while its own slow-path call
                # is in progress (waiting in spl_cache_grow with IRQs on) keeps its own sleep,
                # long-wait and grew accounting and gives the interrupted call its own back
                outer = self._slow_path_state(t)
                t.spl_slept = t.spl_long_wait = 0
            t.spl_grew = False
            t.spl_alloc = (skc, start)
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
        if hist is not self._h_hit:  # the call was runnable all the time it did not sleep
            self._h_runnable.record(t.now - start - t.spl_slept)
        if outer is not None:
            if t.spl_long_wait:
                self.machine.metrics.count("spl.alloc_long_wait_ns", t.spl_long_wait)
            t.spl_slept, t.spl_long_wait, t.spl_alloc, t.spl_grew = outer
        return obj

    @staticmethod
    def _slow_path_state(t: Thread) -> tuple[int, int, Any, bool]:
        """What an allocation in progress on `t` has accounted so far (time slept and waited
        long in spl_cache_grow, the call itself, whether it grew): nothing outside one."""
        return (getattr(t, "spl_slept", 0), getattr(t, "spl_long_wait", 0),
                getattr(t, "spl_alloc", None), getattr(t, "spl_grew", False))

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
        skm = skc.mags[t.cpu.id]
        if not skm.objs or t.irqs_off:
            return None
        if t.cpu.irqs and t.cpu.irqs[0].at <= t.env._now + t.pending + self._alloc_hit_ns:
            return None
        # call, local_irq_disable, pop, local_irq_enable (+ the constructor): one charge; the
        # IRQ-off section and the hit have constant lengths, so they are counted (fold_hits)
        obj = skm.objs.pop()
        t.pending += skc.hit_alloc_ns
        if self._hits_only and t._tracer is None:
            skm.alloc_hits += 1
        else:
            self._alloc_hit_recorded(t, skc, skm)
        return obj

    def _alloc_hit_recorded(self, t: Thread, skc: SplCache, skm: SplMagazine) -> None:
        """The rest of an alloc_fast hit when the run needs more than its count: skm_age
        (spl-0.7 aging), the step of an unbatched clock, and in a traced run the IRQ-off
        section and the latency one by one."""
        ns = skc.hit_alloc_ns
        start = t.now - ns
        if self._aging_on:
            skm.age = start + self._hit_pre_ns + self._costs["magazine_pop"]
        if not t._batched:
            t._steps.append(ns)
        if t._tracer is None:
            skm.alloc_hits += 1
        else:
            t.irq_off_section(start + self._hit_pre_ns, self._alloc_off_ns)
            self._h_hit.record(ns)

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
                began = t.now
                rc, obj = yield from self.spl_cache_grow(t, skc, flags)
                self.machine.metrics.count("spl.cache_grow_ns", t.now - began)
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
            irqf = yield from self.skc_lock_irqs_on(t, skc)
            do_emergency = skc.obj_emergency > 0
            yield from self.skc_unlock_irqs_on(t, skc, irqf)
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
        if skc.linux_cache is not None:
            mark = t.mark()
            t.charge("call")
            if skc.spec.dtor_cost:
                t.charge_ns(skc.spec.dtor_cost)
            if not self.linux.free_fast(t, skc.linux_cache, obj):
                t.rollback(mark)
                return False
            skc.linux_alloc -= 1
            return True
        skm = skc.mags[t.cpu.id]
        if (len(skm.objs) >= skm.size or t.irqs_off
                or obj < VMALLOC_BASE or obj > VMALLOC_END):  # not is_vmalloc_addr(obj)
            return False
        if t.cpu.irqs and t.cpu.irqs[0].at <= t.env._now + t.pending + skc.hit_free_ns:
            return False
        # call, the destructor, local_irq_save, push, local_irq_restore: one charge; the
        # IRQ-off section and the hit have constant lengths, so they are counted (fold_hits)
        skm.objs.append(obj)
        t.pending += skc.hit_free_ns
        if self._hits_only and t._tracer is None:
            skm.free_hits += 1
        else:
            self._free_hit_recorded(t, skc, skm)
        return True

    def _free_hit_recorded(self, t: Thread, skc: SplCache, skm: SplMagazine) -> None:
        """The rest of a free_fast hit when the run needs more than its count (see
        `_alloc_hit_recorded`; the free path leaves skm_age alone)."""
        ns = skc.hit_free_ns
        if not t._batched:
            t._steps.append(ns)
        if t._tracer is None:
            skm.free_hits += 1
        else:
            t.irq_off_section(t.now - ns + self._hit_pre_ns + skc.spec.dtor_cost,
                              self._free_off_ns)
            self._h_free_hit.record(ns)

    def fold_hits(self) -> None:
        """Record the counted magazine hits (Metrics.fold): per CPU its IRQ-off sections, per
        cache the alloc.hit / free.hit latencies, each a constant of the cache."""
        cpus = self.machine.cpus
        for skc in self.caches:
            for skm in skc.mags:
                n, f = skm.alloc_hits, skm.free_hits
                if n:
                    cpus[skm.cpu].irq_off_sections(self._alloc_off_ns, n)
                    self._h_hit.record(skc.hit_alloc_ns, n)
                if f:
                    cpus[skm.cpu].irq_off_sections(self._free_off_ns, f)
                    self._h_free_hit.record(skc.hit_free_ns, f)
                skm.alloc_hits = skm.free_hits = 0

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

