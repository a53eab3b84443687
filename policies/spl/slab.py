"""The SPL's slab layer: growth on the spl_kmem_cache taskq (spl_cache_grow,
spl_cache_grow_work, __spl_cache_grow, spl_slab_alloc), object return (spl_cache_shrink) and
empty-slab reclaim (spl_slab_reclaim) (seed 000, spl-kmem-cache.c)."""

from __future__ import annotations

from policies.base import Gen
from policies.spl.structs import (
    EAGAIN,
    ENOMEM,
    KMC_BIT_DEADLOCKED,
    KMC_BIT_GROWING,
    KMC_BIT_NOEMERGENCY,
    KMC_BIT_REAPING,
    SplCache,
    SplSlab,
)
from simcore.cpu import Thread
from simcore.flags import KM_NOSLEEP


class SplSlabs:
    """Slab growth, shrink and reclaim paths of SplPolicy."""

    def spl_cache_grow(self, t: Thread, skc: SplCache, flags: int) -> Gen:
        """spl_cache_grow (IRQs on, may sleep). Returns (rc, emergency object or None):
        a KM_NOSLEEP caller takes a best-effort emergency object and returns, before anything
        that sleeps (seed 000:1015; with nosleep_rule = wait_like_km_sleep it goes on like
        KM_SLEEP, as in seed 001); might_sleep (000:1018, a cond_resched under
        CONFIG_PREEMPT_VOLUNTARY); wait for a reaper and return -EAGAIN; the first caller to
        set KMC_BIT_GROWING dispatches spl_cache_grow_work; a DEADLOCKED cache hands out an
        emergency object; otherwise wait up to HZ/10 for GROWING to clear and, on a timeout
        with GROWING still set, mark the cache DEADLOCKED. Every wait returns -ENOMEM (the
        caller restarts)."""
        bits = skc.flags
        t.spl_grew = True
        if self._nosleep_2023 and flags & KM_NOSLEEP:
            return (yield from self.spl_emergency_alloc(t, skc, flags))
        yield from t.might_resched()  # might_sleep() (000:1018)
        if bits.peek(KMC_BIT_REAPING):
            if self._reap_spin:
                t.charge("atomic_op")
                return -EAGAIN, None
            yield from t.sync()
            began = self.machine.env.now
            yield from bits.wait_on_bit(t, KMC_BIT_REAPING)
            t.spl_slept = getattr(t, "spl_slept", 0) + self.machine.env.now - began
            return -EAGAIN, None
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
        t.spl_slept = getattr(t, "spl_slept", 0) + waited
        self._h_wait.record(waited)
        mt = self.machine.metrics
        mt.count("spl.grow_wait_ns", waited)
        if waited <= 1_000_000:
            mt.count("spl.grow_wait_fast")
        if waited >= 100_000_000:
            mt.count("spl.grow_wait_long_ns", waited)
            t.spl_long_wait = getattr(t, "spl_long_wait", 0) + waited
        if not remaining:
            irqf = yield from self.skc_lock_irqs_on(t, skc)
            if bits.peek(KMC_BIT_GROWING) and not bits.peek(KMC_BIT_NOEMERGENCY):
                if not bits.peek(KMC_BIT_DEADLOCKED):
                    mt.event("deadlocked_set", cache=skc.name, cpu=t.cpu.id, thread=t.name,
                             waited=waited, grow=self._grow_state(skc))
                bits.value |= 1 << KMC_BIT_DEADLOCKED
                t.charge("atomic_op")
                skc.obj_deadlock += 1
            yield from self.skc_unlock_irqs_on(t, skc, irqf)
        return -ENOMEM, None

    def _grow_state(self, skc: SplCache) -> str:
        """Where the growth a DEADLOCKED detection gives up on is: `reclaim` (its worker is
        in direct reclaim, or it is queued behind workers that all are: the cases the
        detection exists for, 436ad60), `queued` (waiting for a worker) or `running` (the
        worker is allocating, only slowly)."""
        in_reclaim = self.machine.memory.in_reclaim
        task = skc.waitq.wakers[0] if skc.waitq.wakers else None
        if task is None or task.worker is None:
            workers = self.taskq.workers
            stuck = len(workers) >= self.taskq.nthreads and all(w in in_reclaim
                                                                  for w in workers)
            return "reclaim" if stuck else "queued"
        return "reclaim" if task.worker in in_reclaim else "running"

    def skc_lock_irqs_on(self, t: Thread, skc: SplCache) -> Gen:
        """spin_lock(&skc->skc_lock) at a place the seed takes it with IRQs on (000:340, 427,
        443, 473, 1080, 1336); spin_lock_irqsave with skc_lock_irqs_on = irqsave_everywhere
        (the zfs#10646 what-if). Returns the saved IRQ state or None."""
        if self._irqsave_everywhere:
            return (yield from skc.lock.lock_irqsave(t))
        yield from skc.lock.lock(t)
        return None

    def skc_unlock_irqs_on(self, t: Thread, skc: SplCache, irqf: bool | None) -> Gen:
        """The matching spin_unlock / spin_unlock_irqrestore."""
        if irqf is None:
            yield from skc.lock.unlock(t)
        else:
            yield from skc.lock.unlock_irqrestore(t, irqf)

    def spl_cache_grow_work(self, w: Thread, skc: SplCache, flags: int) -> Gen:
        """spl_cache_grow_work (taskq worker): __spl_cache_grow, drop the cache reference,
        clear KMC_BIT_GROWING and wake the waiters if a slab was added (seed 000:968). With
        grow_wake_order = wake_then_clear the wake-up is the one of the SPL before 2adc6b35
        (zfs#9989): __spl_cache_grow wakes the waiters under skc_lock right after linking the
        slab, and the worker clears GROWING only after dropping the lock and the reference."""
        task = getattr(w, "task", None)
        self.machine.metrics.event("grow_run", cache=skc.name, cpu=w.cpu.id, thread=w.name,
                                   queued=w.now - task.dispatched_at if task else 0)
        error = yield from self.__spl_cache_grow(w, skc, flags)
        skc.ref -= 1
        w.charge("atomic_op")
        yield from skc.flags.clear_bit(w, KMC_BIT_GROWING)
        if error == 0 and not self._wake_first:
            yield from skc.waitq.wake_up_all(w)
        skc.waitq.wakers = []
        w.charge("kmalloc")

    def __spl_cache_grow(self, w: Thread, skc: SplCache, flags: int) -> Gen:
        """__spl_cache_grow: spl_slab_alloc, then under skc_lock link the slab at the tail of
        the partial list and clear KMC_BIT_DEADLOCKED (seed 000:944); before 2adc6b35
        (grow_wake_order = wake_then_clear) it then woke the waiters, still under skc_lock,
        while GROWING was set. Returns 0 or -ENOMEM. spl_slab_alloc runs inside
        spl_fstrans_mark (000:948) unless spl_fstrans is off."""
        cookie = w.memalloc_noio
        w.memalloc_noio = cookie or self._fstrans
        sks = yield from self.spl_slab_alloc(w, skc, flags)
        w.memalloc_noio = cookie
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
            if self._wake_first:
                yield from skc.waitq.wake_up_all(w)
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
        irqf = yield from self.skc_lock_irqs_on(t, skc)
        for sks in skc.partial.reversed():
            if sks.ref > 0:
                break
            skc.obj_total -= sks.objs
            skc.slab_total -= 1
            skc.partial.remove(sks)
            t.charge("list_op")
            victims.append(sks)
        yield from self.skc_unlock_irqs_on(t, skc, irqf)
        for sks in victims:
            for obj in sks.free:
                del skc.slab_of[obj]
            yield from self.machine.memory.vfree(t, sks.base)
            skc.slabs_freed += 1
        if victims:
            self.machine.metrics.event("slab_reclaim", cache=skc.name, cpu=t.cpu.id,
                                       slabs=len(victims))

