"""The SPL's reaping: spl_kmem_cache_reap_now, spl_kmem_reap and the spl-0.7 aging timer
(spl_cache_age / spl_magazine_age) (seed 000 and spl-0.7 history)."""

from __future__ import annotations

from typing import Any

import simpy

from policies.base import Gen
from policies.spl.structs import (
    KMC_BIT_DESTROY,
    KMC_BIT_REAPING,
    SplCache,
)
from simcore.cpu import Thread

RECLAIM_STEP_NS = 10_000
"""The skc_reclaim callback's work between two cond_resched() calls, ns."""


class SplReaper:
    """Reap and aging paths of SplPolicy."""

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
            self.machine.metrics.event("reap_start", cache=skc.name, cpu=t.cpu.id)
            if self._reclaim_ns or self._reclaim_sleeps:
                yield from self.skc_reclaim(t, skc)
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

    def skc_reclaim(self, t: Thread, skc: SplCache) -> Gen:
        """spl-0.6 spl_kmem_cache_reap_now (before dc1b302 and until the callbacks went,
        reference B1 item 8): while the cache has slabs, none of them empty, and the last
        callback lowered skc_obj_alloc, run the cache's skc_reclaim callback (the ARC's, which
        evicts buffers); checked under skc_lock, the callback run without it, IRQs on, with
        KMC_BIT_REAPING held. Seed 000 has no callbacks (ASSERT(reclaim == NULL) at 000:686),
        hence the defaults 0."""
        objects = None
        while True:
            yield from skc.lock.lock(t)
            do_reclaim = (skc.slab_total > 0 and skc.slab_total == skc.slab_alloc
                          and (objects is None or skc.obj_alloc < objects))
            objects = skc.obj_alloc
            yield from skc.lock.unlock(t)
            if not do_reclaim:
                return
            yield from self._arc_reclaim_callback(t)
            self.machine.metrics.count("spl.skc_reclaim_calls")

    def _arc_reclaim_callback(self, t: Thread) -> Gen:
        """One call of an ARC-style skc_reclaim callback (arc_kmem_reap_now-like work): it
        evicts (`skc_reclaim_ns` of work on this CPU, a cond_resched() every RECLAIM_STEP_NS:
        the CPU goes to a waiting thread only when need_resched is set, a preempting wake-up
        or the tick past the slice, as _cond_resched does) and blocks `skc_reclaim_sleeps`
        times for `skc_reclaim_sleep_ns` (a mutex held by another ARC user, an I/O; the holder
        is not modelled, so each is a timed sleep), the work split evenly around the sleeps.
        The callback frees none of the cache's objects itself (an assumption: the frees come
        from the workload)."""
        pieces = self._reclaim_sleeps + 1
        for i in range(pieces):
            left = self._reclaim_ns // pieces
            while left > 0:
                step = min(left, RECLAIM_STEP_NS)
                t.charge_ns(step)
                left -= step
                yield from t.cond_resched()  # in the eviction loop
            if i < self._reclaim_sleeps:
                yield from t.sync()  # Thread.sleep times its timeout from the synced clock
                yield from t.sleep(self._reclaim_sleep_ns)

    def spl_kmem_reap(self, t: Thread) -> Gen:
        """spl_kmem_reap: spl_kmem_cache_reap_now on every cache."""
        for skc in list(self.caches):
            yield from self.reap(t, skc)

    # spl-0.7 aging ------------------------------------------------------------------------
    def _age_delay(self) -> int:
        """skc_delay / 3, ns."""
        return int(self.tun["skc_delay"] * 1e9) // 3

    def _schedule_age(self, skc: SplCache) -> None:
        """The first taskq_dispatch_delay of spl_cache_age, skc_delay/3 after the start (from
        set-up code, not from a thread)."""
        def fire(_ev: object) -> None:
            if not skc.flags.peek(KMC_BIT_DESTROY):
                skc.taskqid = self.taskq.dispatch_nowait(self.spl_cache_age, skc)

        self.machine.env.timeout(self._age_delay()).callbacks.append(fire)

    def spl_cache_age(self, w: Thread, skc: SplCache) -> Gen:
        """spl-0.7 spl_cache_age (taskq): take a cache reference (skc_ref), run
        on_each_cpu(spl_magazine_age) and wait until every CPU has run it, spl_slab_reclaim
        the slabs the age-outs emptied, re-dispatch itself skc_delay/3 later (its id stored
        in skc_taskqid under skc_lock) and drop the reference."""
        m = self.machine
        if skc.flags.peek(KMC_BIT_DESTROY):
            return  # spl_kmem_cache_destroy cancels the pending task (skc_taskqid)
        skc.ref += 1
        w.charge("atomic_op")
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
        yield from self.spl_slab_reclaim(w, skc)
        tid = 0
        if not skc.flags.peek(KMC_BIT_DESTROY):
            tid = yield from self.taskq.dispatch_delay(w, self.spl_cache_age, self._age_delay(),
                                                       skc)
        yield from skc.lock.lock(w)
        skc.taskqid = tid
        yield from skc.lock.unlock(w)
        skc.ref -= 1
        w.charge("atomic_op")

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
        # time_after(jiffies, skm_age + skc_delay * HZ): both times in whole jiffies (a pass a
        # few us after the jiffy that makes the magazine skc_delay old does not age it out);
        # a -compressed skc_delay shorter than a jiffy stays a fraction of one
        tick = self.machine.tick_ns
        if not skm.objs or t.now // tick <= skm.age // tick + self.tun["skc_delay"] * self.machine.hz:
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

