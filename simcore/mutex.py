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

from collections.abc import Iterable
from dataclasses import dataclass
from heapq import heappush
from typing import Any

import simpy
from simpy.events import NORMAL, PENDING

from simcore.cpu import Gen, Thread, Wake, new_event
from simcore.deadlock import self_deadlock
from simcore.spinlock import LockStat, SpinLock


@dataclass
class MutexStat(LockStat):
    """lock_stat columns plus lockstat's spin and block figures (ns)."""

    spins: int = 0
    """Contended acquisitions that spun (on an owner that was running)."""
    spin_total: int = 0
    blocks: int = 0
    """Contended acquisitions that slept (the owner was not running, or stopped running)."""
    block_total: int = 0


class _MutexTicket(simpy.Event):
    """A mutex waiter's clock step on a batched clock (`AdaptiveMutex._enter`): an event
    that succeeds with None, whose first callback is the arrival (`_arrive_mutex`); when the
    arrival queues the thread it becomes the wait's event (`queued`, with the arrival's
    `since` and `bounced`). Made without Event.__init__ (`new_event`)."""

    _ok = True
    _value = None
    thread: Thread
    tryenter: bool
    queued = False
    since: int
    bounced: bool
    arrival: list[Any]


class AdaptiveMutex(SpinLock):
    """illumos kmutex_t (MUTEX_DEFAULT, adaptive): `lock` (mutex_enter), `unlock`
    (mutex_exit), `trylock` (mutex_tryenter), with the SpinLock's fields so that code which
    handles a lock it knows to be free can keep doing so."""

    kind = "adaptive"
    _spin_if_idle = False
    quiet_arrivals = True
    """A waiter may queue without its clock step's event when nothing can happen before its
    arrival (`_enter`); False sends every arrival through the step (the tests compare)."""
    """Spin only while this CPU has nothing else to run (the Linux mutex's need_resched
    test, `_keep_spinning`; written out in `_enter`)."""

    def __init__(self, machine: Any, name: str) -> None:
        super().__init__(machine, name)
        self.stat = MutexStat(name, wait_hist=self.wait_hist, hold_hist=self.hold_hist)
        self._counted = False
        self._arrive_mutex_cb = self._arrive_mutex
        self._spin_check_ns: int = machine.costs.values["mutex_spin_check"]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    def _take(self, t: Thread, at: int) -> int:
        """SpinLock._take's steps (written out: one call, not two) but for the
        preempt_count: a mutex holder stays preemptible. `_counted` marks the hold, whose
        release (`_release`) then leaves preempt_count as it found it."""
        cpu = t.cpu
        cid = cpu.id
        st = self.stat
        st.acquisitions += 1
        last = self.last_cpu
        if last == cid or last < 0:  # the line is this CPU's already (or nobody's)
            ns = self._acquire_ns
            if last < 0:
                self.last_cpu = cid
                self.last_node = cpu.node
        else:
            st.acq_bounces += 1
            node = cpu.node
            ns = self._remote_ns if self.last_node != node else self._transfer_ns
            self.last_cpu = cid
            self.last_node = node
        t.pending += ns  # Thread.charge, inlined
        if not self._batched and ns:
            t._steps.append(ns)
        self.owner = t
        self.owner_in_irq = t.in_irq > 0
        self.acquired_at = at
        self._counted = True
        t.held.append(self)
        return ns

    def _release(self, t: Thread) -> None:
        """mutex_exit's release at the holder's local time: SpinLock._release's steps (the
        hold, the line, `free_at`) written out, with the turnstile hand-over to the first
        waiter at once when the release is not ahead of the clock (`SpinLock._grant`, whose
        mutex case is inlined: a mutex waiter counts its own wait), else at the release time
        (`SpinLock._grant_at`). preempt_count is lowered only for a hold marked `_counted`
        (by `_take`, or by a caller that took the free mutex itself), which it raises first:
        a mutex holder stays preemptible."""
        if self._counted:
            self._counted = False
        else:
            t.preempt_count -= 1
        env = self.env
        now = env._now
        p = t.pending
        at = now + p
        held = at - self.acquired_at
        self.stat.holds[held] += 1
        if t._tracer is not None:
            t._tracer.span(t.cpu.id, "lock", f"hold {self.name}", self.acquired_at, held,
                           t.name)
        t.held.remove(self)
        ns = self._release_ns
        t.pending = p + ns  # Thread.charge, inlined
        if not self._batched and ns:
            t._steps.append(ns)
        self.owner = None
        self.free_at = at
        waiters = self.waiters
        if waiters:
            if at <= now:
                nt, ev, _since = waiters.popleft()
                ev._value = self._take(nt, now)
                del ev.callbacks[0]  # the later hand-over (`_grant_on_wake`) is not needed
                ev._ok = True
                heappush(env._queue, (now, NORMAL, next(env._eid), ev))  # Event.succeed
            else:
                ev = waiters[0][1]
                ev._ok = True
                heappush(env._queue, (at, NORMAL, next(env._eid), ev))  # env.schedule

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
        """A waiter spins while the owner runs (or the mutex is on its way to it) and, for
        a Linux mutex, its own CPU has nothing else to run."""
        o = self.owner
        return (o is None or o.cpu.current is o) and not (self._spin_if_idle
                                                        and t.cpu.need_resched)

    def lock(self, t: Thread) -> Gen:
        """mutex_enter (mutex_vector_enter when the mutex is taken): take the mutex; spin
        while the owner runs, block when it does not (`_enter`)."""
        return self._enter(t, False)

    def tryenter_or_enter(self, t: Thread) -> Gen:
        """mutex_tryenter, and mutex_enter when it fails (kmem_depot_alloc's pattern): the
        failed try is a write of the lock word (an atomic_op, the line taken) and, at the
        same instant, the waiter's arrival (`_enter`). Returns True when the try failed (the
        caller counts that contention once it holds the mutex), False when it took the
        mutex."""
        return self._enter(t, True)

    def _enter(self, t: Thread, tryenter: bool) -> Gen:
        """`lock`, after a mutex_tryenter when `tryenter`; returns `tryenter` once the mutex
        is held, False when the try took it. One generator for both (a contended acquire
        passes one generator level). Written out: the clock step of Thread.sync
        (`Thread._timeout`), the ticket (`_touch`), the wait's event with its hand-over armed
        (`_grant_on_wake`, see `SpinLock._grant_at`) and the spin check (`Thread.charge`) are
        inlined.

        A failed mutex_tryenter and the mutex_enter after it are one step: the waiter takes
        its place in the queue at the try's instant, and the try's atomic_op falls within the
        spin wait that starts there (a simplification of the seed's two lock-word writes an
        atomic_op apart: a waiter arriving between them now queues behind the trier, see
        docs/simcore.md).

        A waiter that arrives with local work pending, at a mutex that is taken, whose owner
        runs, on a CPU with no thread waiting for it, and with no interrupt or other event
        due before its arrival (`quiet_until`'s test, inlined), queues without the clock
        step's event (unless `quiet_arrivals` is off): no
        other CPU can act, and nothing can reach this one, before it arrives, so it takes its
        place at its own time exactly as it would after the step, and starts spinning. A
        mutex_tryenter that would fail there does the same.

        Otherwise, on a batched clock, the clock step is a `_MutexTicket` whose first
        callback is the arrival (`_arrive_mutex`): a waiter that will spin takes its place
        in the queue there, at the step's instant and before anything else runs, and its
        thread is resumed only by the hand-over (or by an interrupt in the spin, taken as in
        the spin below); a waiter that finds the mutex free or its own, that would block, or
        that has an interrupt or a thread waiting on its CPU is resumed by the step and goes
        on here as after Thread.sync."""
        env = self.env
        cpu = t.cpu
        spin = False  # the owner is known to run (`_keep_spinning`)
        queued = False  # `_arrive_mutex` queued the thread and started its spin
        p = t.pending
        owner = self.owner
        now = env._now + p
        q = env._queue
        irqs = cpu.irqs
        if (p and t._batched and (owner is not None or self.waiters or self.free_at > now)
                and owner is not t and not cpu.runq and self.quiet_arrivals
                and not (irqs and irqs[0].at <= now) and not (q and q[0][0] <= now)
                and (owner is None or owner.cpu.current is owner)  # _keep_spinning
                and not (self._spin_if_idle and cpu.need_resched)):
            cpu.busy_ns += p  # the clock step, no event: nothing happens before `now`
            t.pending = 0
            spin = True
        else:
            if p and t._batched:  # Thread.sync's clock step, the arrival its first callback
                cpu.busy_ns += p
                ev = new_event(_MutexTicket)
                ev.thread = t
                ev.tryenter = tryenter
                ev.callbacks = ev.arrival = [self._arrive_mutex_cb]
                heappush(env._queue, (now, t._prio, next(env._eid), ev))
                try:
                    yield ev
                except simpy.Interrupt as why:  # in the spin `_arrive_mutex` started
                    if why.cause != "mutex_block":
                        t.spinning = None  # not parked at the spin while in the handler
                        yield from t.deliver_irqs()
                        t.spinning = self
                queued = ev.queued
            if not queued:
                if t.pending or cpu.irqs or cpu.runq:
                    yield from t.sync()
                    cpu = t.cpu
                now = env._now
                owner = self.owner
                if owner is None and not self.waiters and self.free_at <= now:
                    self._take(t, now)
                    return False
        st = self.stat
        if queued:
            now = ev.since
            bounced = ev.bounced
            spinning = True
        else:
            if owner is t:
                self_deadlock(self.machine, self, t)
            cid = cpu.id  # _touch: counted with the contention, when the wait ends; a failed
            acq = st.acquisitions  # try is this CPU's own write of the lock word, at this instant
            bounced = not tryenter and (
                self._touch_cpu if self._touch_acq == acq else self.last_cpu) != cid
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
            spinning = ev._value is PENDING and (spin or self._keep_spinning(t))
            if spinning:
                t.mutex_stop = False
                t.spinning = self
        if spinning:
            while ev._value is PENDING and not t.mutex_stop:
                try:
                    yield ev
                except simpy.Interrupt as why:
                    if why.cause != "mutex_block":
                        t.spinning = None  # not parked at the spin while in the handler
                        yield from t.deliver_irqs()
                        t.spinning = self
            t.spinning = None
            spun = env._now - now
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
        return tryenter

    def _arrive_mutex(self, ticket: _MutexTicket) -> None:
        """The clock step of a waiter's arrival (`_enter`) at its own time, before the
        thread's resume: when the mutex is taken (or on its way to a waiter), is not the
        thread's own, its owner runs (`_keep_spinning`), and nothing waits on the thread's
        CPU (no interrupt scheduled, no thread runnable: Thread.sync would look at them),
        queue the thread and start its spin exactly as `_enter` would after the step (the
        ticket, `_touch` inlined; the place in the queue; the spin check), with the ticket
        re-armed as the wait's event (the hand-over first, the resume after it). Otherwise
        leave the resume to run next, as the step's would."""
        t = ticket.thread
        t.pending = 0
        cpu = t.cpu
        owner = self.owner
        waiters = self.waiters
        now = self.env._now
        if (cpu.irqs or cpu.runq or owner is t
                or (owner is None and not waiters and self.free_at <= now)
                or not ((owner is None or owner.cpu.current is owner)  # _keep_spinning
                        and not (self._spin_if_idle and cpu.need_resched))):
            ticket.queued = False
            return
        cid = cpu.id
        acq = self.stat.acquisitions
        ticket.bounced = not ticket.tryenter and (
            self._touch_cpu if self._touch_acq == acq else self.last_cpu) != cid
        self._touch_cpu = cid
        self._touch_acq = acq
        ticket.callbacks = [self._grant_on_wake_cb, ticket.arrival.pop()]
        ticket._value = PENDING
        ticket.queued = True
        ticket.since = now
        waiters.append((t, ticket, now))
        if owner is None and len(waiters) == 1:
            self._grant_at(self.free_at)
        t.blocked_on = self
        t.blocked_since = now
        t.wait_timed = False
        t.pending = self._spin_check_ns  # only batched clocks make tickets
        t.mutex_stop = False
        t.spinning = self

    def unlock(self, t: Thread) -> Iterable[Any]:
        """mutex_exit: synchronise, then release, handing the mutex to the first waiter. The
        synchronisation is skipped when it could change nothing (`quiet_until`, inlined: no
        interrupt due, no other event before the release) and no preemption can be due (full
        preemption with another thread waiting for this CPU): an uncontended round trip on a
        quiet machine costs one event. Then this is a plain call, which releases and returns
        an empty tuple for the caller's `yield from`; otherwise it returns the generator that
        synchronises and releases (`_sync_unlock`)."""
        at = self.env._now + t.pending
        cpu = t.cpu
        irqs = cpu.irqs
        q = self.env._queue
        if ((irqs and irqs[0].at <= at) or (q and q[0][0] <= at)
                or (cpu.runq and self.machine.preempt_full)):
            return self._sync_unlock(t)
        self._release(t)
        return ()

    def _sync_unlock(self, t: Thread) -> Gen:
        """`unlock` with the synchronisation: Thread.sync's clock step written out."""
        p = t.pending
        if p and t._batched:
            env = self.env
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
        self._release(t)


class Mutex(AdaptiveMutex):
    """Linux struct mutex: mutex_lock (might_sleep, then optimistic spinning while the owner
    runs and this CPU has nothing else to run, else sleep), mutex_trylock, mutex_unlock."""

    kind = "mutex"
    _spin_if_idle = True

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
