"""Mutexes that spin while the owner runs and sleep when it does not: the illumos adaptive
mutex (kmutex_t) and the Linux struct mutex with optimistic spinning.

What is modelled:
- illumos mutex_enter / mutex_vector_enter: a waiter spins while the owner is running on a CPU
  and blocks on the lock's turnstile as soon as the owner is not (it was preempted or went to
  sleep holding the lock); mutex_exit hands the lock to the first waiter (turnstile hand-off),
  which runs when it gets a CPU again.
- Linux mutex_lock: might_sleep (a voluntary preemption point), then the fast path; a
  contended waiter spins on the owner (mutex_optimistic_spin / mutex_spin_on_owner) while the
  owner runs and the waiter's own CPU has nothing else to run (need_resched clear), else it
  sleeps on the wait list; mutex_unlock hands over to the first waiter.
- A holder stays preemptible (unlike a spinlock holder) and may sleep with the lock held.
- Statistics: the lock_stat columns (wait time = spin + block) plus, apart, the spin and block
  counts and times (lockstat's "Adaptive mutex spin" / "Adaptive mutex block").

Simplified: waiters are served in arrival order, where a turnstile orders them by priority and
a Linux mutex lets a spinner steal the lock from a woken waiter (until MUTEX_FLAG_HANDOFF); the
osq (MCS queue of spinners) is not modelled, every spinner watches the owner itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from heapq import heappush
from typing import Any

import simpy
from simpy.events import PENDING

from simcore.cpu import Gen, Thread, Wake, new_event
from simcore.deadlock import self_deadlock
from simcore.spinlock import LockStat, SpinLock, quiet_until


@dataclass
class MutexStat(LockStat):
    """lock_stat columns plus lockstat's spin and block figures (ns)."""

    spins: int = 0
    """Contended acquisitions that spun (on an owner that was running)."""
    spin_total: int = 0
    blocks: int = 0
    """Contended acquisitions that slept (the owner was not running, or stopped running)."""
    block_total: int = 0


_spin_release = SpinLock._release


class AdaptiveMutex(SpinLock):
    """illumos kmutex_t (MUTEX_DEFAULT, adaptive): `lock` (mutex_enter), `unlock`
    (mutex_exit), `trylock` (mutex_tryenter), with the SpinLock's fields so that code which
    handles a lock it knows to be free can keep doing so."""

    kind = "adaptive"

    def __init__(self, machine: Any, name: str) -> None:
        super().__init__(machine, name)
        self.stat = MutexStat(name, wait_hist=self.wait_hist, hold_hist=self.hold_hist)
        self._counted = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    def _take(self, t: Thread, at: int) -> int:
        """SpinLock._take's steps (written out: one call, not two) but for the
        preempt_count: a mutex holder stays preemptible. `_counted` marks the hold, whose
        release (`_release`) then leaves preempt_count as it found it."""
        cpu = t.cpu
        st = self.stat
        st.acquisitions += 1
        last = self.last_cpu
        if last != cpu.id and last >= 0:
            st.acq_bounces += 1
            cost = "cacheline_remote_node" if self.last_node != cpu.node else "cacheline_transfer"
        else:
            cost = "lock_acquire"
        ns = t._costs[cost]
        t.pending += ns  # Thread.charge, inlined
        if not t._batched and ns:
            t._steps.append(ns)
        self.last_cpu = cpu.id
        self.last_node = cpu.node
        self.owner = t
        self.owner_in_irq = bool(t.in_irq)
        self.acquired_at = at
        self._counted = True
        t.held.append(self)
        return ns

    def _release(self, t: Thread) -> None:
        """SpinLock._release, which lowers preempt_count: raised first for a hold marked
        `_counted` (by `_take`, or by a caller that took the free mutex itself), so that it
        ends where the acquire found it."""
        if self._counted:
            t.preempt_count += 1
            self._counted = False
        _spin_release(self, t)

    def owner_off_cpu(self, owner: Thread) -> None:
        """The owner left its CPU (blocked or preempted): every spinning waiter blocks."""
        if owner is self.owner:
            for w, _ev, _since in self.waiters:
                if w.spinning is self and not w.mutex_stop:
                    w.mutex_stop = True
                    w.process.interrupt("mutex_block")
                elif w.spinning is None:
                    w.mutex_stop = True  # taking an interrupt: it blocks when it returns

    def _keep_spinning(self, t: Thread) -> bool:
        o = self.owner
        return o is None or o.cpu.current is o

    def lock(self, t: Thread) -> Gen:
        """mutex_enter (mutex_vector_enter when the mutex is taken): take the mutex; spin
        while the owner runs, block when it does not. The contended path is written out:
        the clock step of Thread.sync (`Thread._timeout`), the ticket (`_touch`), the wait's
        event with its hand-over armed (`_grant_on_wake`, see `SpinLock._grant_at`) and the
        spin check (`Thread.charge`) are inlined."""
        p = t.pending
        env = self.env
        if p and t._batched:  # Thread.sync's clock step without its generator
            t.cpu.busy_ns += p
            wake = new_event(Wake)
            wake.env = env
            wake.callbacks = []
            heappush(env._queue, (env._now + p, t._prio, next(env._eid), wake))
            yield wake
            t.pending = 0
        cpu = t.cpu
        if t.pending or cpu.irqs or cpu.runq:
            yield from t.sync()
            cpu = t.cpu
        now = env._now
        owner = self.owner
        if owner is None and not self.waiters and self.free_at <= now:
            self._take(t, now)
            return
        if owner is t:
            self_deadlock(self.machine, self, t)
        st = self.stat
        cid = cpu.id  # _touch: counted with the contention, when the wait ends
        acq = st.acquisitions
        bounced = (self._touch_cpu if self._touch_acq == acq else self.last_cpu) != cid
        self._touch_cpu = cid
        self._touch_acq = acq
        ev = new_event(simpy.Event)  # env.event(), with the hand-over armed
        ev.env = env
        ev.callbacks = [self._grant_on_wake_cb]
        ev._value = PENDING
        waiters = self.waiters
        waiters.append((t, ev, now))
        if owner is None and len(waiters) == 1:
            self._grant_at(self.free_at)
        t.blocked_on = self
        t.blocked_since = now
        t.wait_timed = False
        ns = t._costs["mutex_spin_check"]  # stays on the local clock: no sync while queued
        t.pending += ns
        if not t._batched and ns:
            t._steps.append(ns)
        if ev._value is PENDING and self._keep_spinning(t):
            t.mutex_stop = False
            t.spinning = self
            start = env._now
            while ev._value is PENDING and not t.mutex_stop:
                try:
                    yield ev
                except simpy.Interrupt as why:
                    if why.cause != "mutex_block":
                        t.spinning = None  # not parked at the spin while in the handler
                        yield from t.deliver_irqs()
                        t.spinning = self
            t.spinning = None
            spun = env._now - start
            t.cpu.busy_ns += spun
            st.spins += 1
            st.spin_total += spun
        if ev._value is PENDING:
            st.blocks += 1
            start = env._now
            yield from t.block(ev, self)
            st.block_total += env._now - start
        t.blocked_on = None
        st.contentions += 1
        st.con_bounces += bounced
        waited = env._now - now + ev._value  # the wait ends when the line arrives
        st.waits[waited] += 1
        tr = self.machine.tracer
        if tr is not None:
            tr.span(t.cpu.id, "lock", f"wait {self.name}", now, env._now - now, t.name)

    def unlock(self, t: Thread) -> Gen:
        """mutex_exit: synchronise, then release, handing the mutex to the first waiter. The
        synchronisation is skipped when it could change nothing (`quiet_until`: no interrupt
        due, no other event before the release) and no preemption can be due (full
        preemption with another thread waiting for this CPU): an uncontended round trip on a
        quiet machine costs one event."""
        if (self.machine.preempt_full and t.cpu.runq) or not quiet_until(t):
            yield from t.sync()
        self._release(t)


class Mutex(AdaptiveMutex):
    """Linux struct mutex: mutex_lock (might_sleep, then optimistic spinning while the owner
    runs and this CPU has nothing else to run, else sleep), mutex_trylock, mutex_unlock."""

    kind = "mutex"

    def _keep_spinning(self, t: Thread) -> bool:
        return super()._keep_spinning(t) and not t.cpu.need_resched

    def lock(self, t: Thread) -> Gen:
        """mutex_lock: a might_sleep preemption point, then the acquire."""
        yield from t.might_resched()
        yield from super().lock(t)

    @property
    def acquisitions(self) -> int:
        return self.stat.acquisitions

    @property
    def contentions(self) -> int:
        return self.stat.contentions
