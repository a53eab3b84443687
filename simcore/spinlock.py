"""FIFO (ticket/queued) spinlocks with the /proc/lock_stat statistics.

Waiters are granted the lock in arrival order and keep their CPU busy while they spin. A context
that asks for a lock already held on its own CPU (the same thread, or an interrupt handler that
interrupted the holder) can never get it: that is reported as a self-deadlock and ends the run.

The statistics follow kernel/locking/lockdep.c (`lock_contended`, `__lock_acquired`,
`lock_release`) as lockdep_proc.c prints them: `contentions` are contended acquisitions that
completed (so never more than `acquisitions`), their `waittime` runs from the contention to
the moment the lock word's cache line arrived (at least one cache-line transfer), and the
bounce columns count events where the lock's cache line last belonged to another CPU: every
CPU that writes the lock word (an acquire, a release, a ticket taken by a waiter, a failed
trylock) takes the line.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from heapq import heappush
from typing import Any

import simpy
from simpy.events import NORMAL, PENDING

from simcore.cpu import Gen, Thread
from simcore.deadlock import self_deadlock


class _Folded:
    """A wait or hold column of LockStat, kept in `attr`: read or written after the tallies
    are folded in."""

    def __init__(self, attr: str) -> None:
        self.attr = attr

    def __get__(self, st: Any, owner: Any = None) -> Any:
        if st is None:
            return self
        st.fold()
        return getattr(st, self.attr)

    def __set__(self, st: Any, ns: int) -> None:
        st.fold()
        setattr(st, self.attr, ns)


@dataclass
class LockStat:
    """The /proc/lock_stat columns of one lock class (times in ns; printed in us).

    Waits and holds are tallied by value on the lock paths (`waits[ns] += 1`, a dict update
    instead of two calls) and folded into the min / max / total columns and the lock class's
    histograms when they are read (`fold`: any read of a wait or hold column, and
    `Metrics.fold` before every timeline sample and the summary). Folding a tally gives the
    numbers recording each value gives, in any order."""

    name: str
    con_bounces: int = 0
    """Contentions where the lock's cache line last belonged to another CPU."""
    contentions: int = 0
    """Acquisitions that had to wait (counted when the wait ends)."""
    acq_bounces: int = 0
    """Acquisitions where the lock's cache line came from another CPU."""
    acquisitions: int = 0
    waits: defaultdict[int, int] = field(default_factory=lambda: defaultdict(int), repr=False)
    """Wait times not yet folded: ns -> count."""
    holds: defaultdict[int, int] = field(default_factory=lambda: defaultdict(int), repr=False)
    """Hold times not yet folded: ns -> count."""
    wait_hist: Any = field(default=None, repr=False)
    hold_hist: Any = field(default=None, repr=False)
    """The lock class's histograms the tallies are folded into (None: no histograms)."""

    _wmin: int = 0
    _wmax: int = 0
    _wtotal: int = 0
    _hmin: int = 0
    _hmax: int = 0
    _htotal: int = 0
    _waits: int = 0
    _holds: int = 0

    waittime_min = _Folded("_wmin")
    waittime_max = _Folded("_wmax")
    waittime_total = _Folded("_wtotal")
    holdtime_min = _Folded("_hmin")
    holdtime_max = _Folded("_hmax")
    holdtime_total = _Folded("_htotal")

    def fold(self) -> None:
        """Move the tallied waits and holds into the columns and histograms."""
        if self.waits:
            waits, self.waits = self.waits, defaultdict(int)
            h = self.wait_hist
            for ns, n in waits.items():
                self.record_waits(ns, n)
                if h is not None:
                    h.record(ns, n)
        if self.holds:
            holds, self.holds = self.holds, defaultdict(int)
            h = self.hold_hist
            for ns, n in holds.items():
                self.record_holds(ns, n)
                if h is not None:
                    h.record(ns, n)

    def record_waits(self, ns: int, n: int) -> None:
        """`n` waits of `ns` each, folded into the columns (not the histograms)."""
        if not n:
            return
        if self._waits == 0 or ns < self._wmin:
            self._wmin = ns
        self._waits += n
        if ns > self._wmax:
            self._wmax = ns
        self._wtotal += ns * n

    def record_holds(self, ns: int, n: int) -> None:
        """`n` holds of `ns` each (counted fast-path round trips), folded into the columns
        (not the histograms)."""
        if not n:
            return
        if self._holds == 0 or ns < self._hmin:
            self._hmin = ns
        self._holds += n
        if ns > self._hmax:
            self._hmax = ns
        self._htotal += ns * n

    @property
    def waittime_avg(self) -> float:
        return self.waittime_total / self.contentions if self.contentions else 0.0

    @property
    def holdtime_avg(self) -> float:
        return self.holdtime_total / self.acquisitions if self.acquisitions else 0.0

    SNAPSHOT_KEYS = ("contentions", "acquisitions", "waittime_total", "holdtime_total",
                     "con_bounces", "acq_bounces")
    """The cumulative columns the timeline samples, in `sums` order."""

    def sums(self) -> tuple[int, int, int, int, int, int]:
        """The `SNAPSHOT_KEYS` columns (one fold, no per-column property)."""
        if self.waits or self.holds:
            self.fold()
        return (self.contentions, self.acquisitions, self._wtotal, self._htotal,
                self.con_bounces, self.acq_bounces)

    def snapshot(self) -> dict[str, int]:
        return dict(zip(self.SNAPSHOT_KEYS, self.sums(), strict=True))


def quiet_until(t: Thread) -> bool:
    """True when synchronising `t` now would only advance the clock: no interrupt has
    arrived on its CPU by its local time and no other SimPy event is due at or before it, so
    no other CPU can act, and nothing can reach this one, before that time."""
    at = t.env._now + t.pending
    irqs = t.cpu.irqs
    if irqs and irqs[0].at <= at:
        return False
    q = t.env._queue
    return not q or q[0][0] > at


class _Ticket(simpy.Event):
    """The place in the queue of a waiter that arrives with IRQs off (`lock_irqsave`,
    `_acquire`): first the event of the thread's arrival at the lock, at its own time
    (`_arrive` first among its callbacks, the thread's resume after it), then, re-armed with
    the resume alone, the hand-over, which the resumed thread completes itself (`_handover`)
    before it goes on. `since`: the time it took the ticket (set for a hand-over at the
    release's instant only, `_grant`), `bounced`: whether taking it pulled the lock's line
    from another CPU, `arrival`: the callback list of the arrival's delivery.

    Made without Event.__init__ (`_new_ticket`): the lock sets its callbacks, and it is only
    ever scheduled by the lock itself (never through `env`, which it does not keep), always
    to succeed. The value the thread is resumed with says what happened: None, the arrival
    found the lock free (or its own); PENDING, the lock was released ahead of the clock and
    reaches the thread now (`_handover` is to be done); a number, the lock was taken for the
    thread at the release's instant (`_grant`: the ns of the take) and only the wait is left
    to count (`_spun`)."""

    _ok = True
    _value = None
    since: int
    bounced: bool
    thread: Thread
    arrival: list[Any]


_new_ticket = object.__new__


class SpinLock:
    """A FIFO spinlock: `lock`, `unlock`, `lock_irqsave`, `unlock_irqrestore`, `trylock`.

    A contended acquire with IRQs off (spin_lock_irqsave from IRQs on, spin_lock under
    local_irq_disable or in a handler) costs two events: the arrival (`_arrive`, where the
    waiter takes its ticket) and the hand-over, after which the waiter is resumed once and
    completes the acquire itself (`_handover`: it takes the lock and counts its wait) before
    it goes on. The release (`_release`) schedules the hand-over at the holder's local time.

    The costs of the lock's steps are read from the machine's cost table once, when the lock
    is made, and whether the machine batches local work is its `_batched`."""

    def __init__(self, machine: Any, name: str) -> None:
        self.machine = machine
        self.env = machine.env
        self.name = name
        """Lock class name as lock_stat prints it (&skc->skc_lock, vmap_area_lock, ...)."""
        self.owner: Thread | None = None
        """Thread holding the lock, or None."""
        self.owner_in_irq = False
        self.acquired_at = 0
        """Simulated time the current owner got the lock."""
        self.free_at = 0
        """Simulated time of the last release (may lie ahead of env.now: see `_release`)."""
        self.waiters: deque[tuple[Thread, simpy.Event, int]] = deque()
        """Spinning waiters in ticket order: (thread, grant event, since)."""
        self.last_cpu = -1
        """CPU of the last acquire (and so of the release an acquire follows): -1 never."""
        self.last_node = -1
        self._arrive_cb = self._arrive
        self._grant_on_wake_cb = self._grant_on_wake
        self._touch_cpu = -1
        self._touch_acq = -1
        """CPU of the last waiter's ticket or failed trylock, and `stat.acquisitions` then:
        it owns the line until the next acquire (see `_line_cpu`)."""
        costs = machine.costs.values
        self._acquire_ns: int = costs["lock_acquire"]
        self._transfer_ns: int = costs["cacheline_transfer"]
        self._remote_ns: int = costs["cacheline_remote_node"]
        """An acquire's charge: the line already local, from another CPU of the node, from
        another node."""
        self._release_ns: int = costs["lock_release"]
        self._irq_disable_ns: int = costs["irq_disable"]
        self._irq_enable_ns: int = costs["irq_enable"]
        self._batched: bool = machine.batching
        """Local work is charged as sums (no per-step list to extend)."""
        self.wait_hist = machine.metrics.hist(f"lock.{name}.wait")
        self.hold_hist = machine.metrics.hist(f"lock.{name}.hold")
        """Spin-wait and hold times of the lock class (shared by its instances), ns."""
        self.stat = LockStat(name, wait_hist=self.wait_hist, hold_hist=self.hold_hist)
        """lock_stat columns."""
        machine.metrics.register_lock(self)

    def __repr__(self) -> str:
        return f"<SpinLock {self.name}>"

    def _take(self, t: Thread, at: int) -> int:
        """The acquire itself at simulated time `at` (lockdep's __lock_acquired): pull the
        line (a bounce if another CPU had it) and own the lock; the ns charged for it."""
        cpu = t.cpu
        st = self.stat
        st.acquisitions += 1
        last = self.last_cpu
        if last != cpu.id and last >= 0:
            st.acq_bounces += 1
            ns = self._remote_ns if self.last_node != cpu.node else self._transfer_ns
        else:
            ns = self._acquire_ns
        t.pending += ns  # Thread.charge, inlined
        if not self._batched and ns:
            t._steps.append(ns)
        self.last_cpu = cpu.id
        self.last_node = cpu.node
        self.owner = t
        self.owner_in_irq = bool(t.in_irq)
        self.acquired_at = at
        t.preempt_count += 1
        t.held.append(self)
        return ns

    def _line_cpu(self) -> int:
        """CPU whose cache last owned the lock's line: the last waiter's ticket or failed
        trylock if no acquire came after it, else the last acquirer (whose release, if any,
        is the last write: a release is followed by the next acquire before anyone else can
        contend)."""
        if self._touch_acq == self.stat.acquisitions:
            return self._touch_cpu
        return self.last_cpu

    def _touch(self, t: Thread) -> bool:
        """`t`'s CPU writes the lock word (takes a ticket, fails a trylock): True if the line
        last belonged to another CPU."""
        cpu = t.cpu.id
        bounced = self._line_cpu() != cpu
        self._touch_cpu = cpu
        self._touch_acq = self.stat.acquisitions
        return bounced

    def lock(self, t: Thread) -> Gen:
        """spin_lock: take the lock, spinning (CPU busy) behind earlier waiters."""
        return self._acquire(t, None)

    def lock_irqsave(self, t: Thread) -> Gen:
        """spin_lock_irqsave: local_irq_save (inlined: the saved state is whether IRQs were
        already off; disabling them starts an IRQ-off section), then the acquire; returns the
        saved state. (Spinlocks only: the mutexes, which reimplement `lock` and `unlock`, are
        never taken with IRQs saved.)

        With a batched clock and local work pending (the save's own charge, unless it costs
        nothing) the acquire is `_acquire`'s IRQs-off path, written out here: the ticket
        scheduled as the thread's synchronisation, then, resumed, the free lock taken, or the
        hand-over completed (`_handover`), or after a take at the release's instant the wait
        counted (`_spun`). Otherwise it is `_acquire`. (`_handover` is inlined: this is every
        contended round trip of a lock taken with IRQs saved.)"""
        was = t.irqs_off
        ns = self._irq_disable_ns
        p = t.pending + ns
        t.pending = p
        env = self.env
        if not was:
            t.irqs_off = True
            t.irq_off_start = env._now + p
        if not self._batched:
            if ns:
                t._steps.append(ns)
            return (yield from self._acquire(t, was))
        if not p:
            return (yield from self._acquire(t, was))
        t.cpu.busy_ns += p
        ticket = _new_ticket(_Ticket)
        ticket.thread = t
        ticket.callbacks = ticket.arrival = [self._arrive_cb]
        heappush(env._queue, (env._now + p, t._prio, next(env._eid), ticket))  # t._timeout
        v = yield ticket
        if v is not PENDING:
            if v is not None:
                self._spun(t, ticket.since, ticket.bounced, v)
            else:
                if self.owner is t:
                    self_deadlock(self.machine, self, t)
                self._take(t, env._now)
            return was
        _t, _ev, since = self.waiters.popleft()  # _handover, inlined
        now = env._now
        cpu = t.cpu
        cid = cpu.id
        st = self.stat
        st.acquisitions += 1
        last = self.last_cpu
        if last == cid:
            ns = self._acquire_ns
        else:
            node = cpu.node
            if last >= 0:
                st.acq_bounces += 1
                ns = self._remote_ns if self.last_node != node else self._transfer_ns
            else:
                ns = self._acquire_ns
            self.last_cpu = cid
            self.last_node = node
        t.pending += ns
        self.owner = t
        self.owner_in_irq = bool(t.in_irq)
        self.acquired_at = now
        t.preempt_count += 1
        t.held.append(self)
        t.spinning = None
        t.blocked_on = None
        waited = now - since
        cpu.busy_ns += waited
        st.contentions += 1
        st.con_bounces += ticket.bounced
        st.waits[waited + ns] += 1
        tr = t._tracer
        if tr is not None:
            tr.span(cid, "lock", f"spin {self.name}", since, waited, t.name)
        return was

    def _acquire(self, t: Thread, ret: Any) -> Gen:
        """The acquire of `lock` and `lock_irqsave`: one generator, returning `ret` (the saved
        IRQ state), so that a contended acquire passes one generator level, not three
        (lock_irqsave, lock, Thread.sync).

        With IRQs off (or in a handler) and local work pending, the synchronisation only
        moves the clock (Thread.sync takes no interrupt and cannot preempt there), so the
        thread schedules its ticket as that wake-up, at its own time, with the arrival
        (`_arrive`) as its first callback: a contended arrival takes its ticket then and
        there, at the same simulated time and in the same order among the events of that
        instant, and the thread is resumed only when the lock has been handed to it, to
        complete the acquire (`_handover`, or `_spun` after `_grant`'s take) before it goes
        on. Otherwise it synchronises, takes the free lock or queues (`_enqueue`) and spins,
        taking interrupts in the spin when IRQs are on, and counts its wait (`_spun`) when
        it is resumed with the lock."""
        p = t.pending
        if p and self._batched and (t.irqs_off or t.in_irq):
            t.cpu.busy_ns += p
            env = self.env
            ticket = _new_ticket(_Ticket)
            ticket.thread = t
            ticket.callbacks = ticket.arrival = [self._arrive_cb]
            heappush(env._queue, (env._now + p, t._prio, next(env._eid), ticket))  # t._timeout
            v = yield ticket
            if v is PENDING:
                self._handover(t, ticket)
                return ret
            if v is not None:
                self._spun(t, ticket.since, ticket.bounced, v)
                return ret
        elif p or t.cpu.irqs or t.cpu.runq:
            yield from t.sync()
        now = self.env._now + t.pending
        owner = self.owner
        if owner is None and not self.waiters and self.free_at <= now:
            self._take(t, now)
            return ret
        if owner is t:
            self_deadlock(self.machine, self, t)
        ev = self.env.event()
        bounced = self._enqueue(t, now, ev)
        while True:
            try:
                handoff = yield ev
                break
            except simpy.Interrupt:
                yield from t.deliver_irqs()
        self._spun(t, now, bounced, handoff)
        return ret

    def _arrive(self, ticket: _Ticket) -> None:
        """The ticket's thread reaches the lock at its own time: the ticket was scheduled as
        the thread's synchronisation (IRQs off), with this as its first callback and the
        thread's resume after it. When the lock is held or has waiters, and is not the
        thread's own, queue the thread (`_enqueue`, inlined): the resume is taken off this
        delivery and the ticket re-armed with it alone for the hand-over, so the thread is
        resumed only when the lock is handed to it; otherwise the resume runs next, where its
        synchronisation would have resumed it, to take the free lock (or find its own)."""
        t = ticket.thread
        t.pending = 0
        now = self.env._now
        owner = self.owner
        if owner is t or (owner is None and not self.waiters and self.free_at <= now):
            return
        ticket.callbacks = [ticket.arrival.pop()]
        ticket._value = PENDING
        cpu = t.cpu.id
        acq = self.stat.acquisitions  # _touch and _line_cpu, inlined
        ticket.bounced = (self._touch_cpu if self._touch_acq == acq else self.last_cpu) != cpu
        self._touch_cpu = cpu
        self._touch_acq = acq
        waiters = self.waiters
        waiters.append((t, ticket, now))
        if owner is None and len(waiters) == 1:
            self._grant_at(self.free_at)
        t.spinning = self
        t.blocked_on = self
        t.blocked_since = now
        t.wait_timed = False

    def _enqueue(self, t: Thread, now: int, ev: simpy.Event) -> bool:
        """Take a ticket at `now` behind the holder and the earlier waiters and spin
        (lockdep's lock_contended): the lock word's line (True if it last belonged to
        another CPU), the hand-over armed on `ev` (`_grant_on_wake`), the place in the
        queue, the hand-over of a lock released ahead of the clock with nobody queued
        before, the wait-for edge."""
        bounced = self._touch(t)
        ev.callbacks.append(self._grant_on_wake_cb)
        waiters = self.waiters
        waiters.append((t, ev, now))
        if self.owner is None and len(waiters) == 1:
            self._grant_at(self.free_at)
        t.spinning = self
        t.blocked_on = self
        t.blocked_since = now
        t.wait_timed = False
        return bounced

    def _handover(self, t: Thread, ticket: _Ticket) -> None:
        """A lock released ahead of the clock reaches its first waiter, the IRQs-off `t`
        queued with `ticket`, at the release time: resumed by the ticket, the waiter takes
        the lock (`_take`, inlined; only batched runs make tickets, so there is no step list
        to extend) and counts the contention (`_spun`, inlined: the wait runs from the
        ticket to the arrival of the lock's line)."""
        _t, _ev, since = self.waiters.popleft()
        now = self.env._now
        cpu = t.cpu
        cid = cpu.id
        st = self.stat
        st.acquisitions += 1
        last = self.last_cpu
        if last == cid:
            ns = self._acquire_ns
        else:
            node = cpu.node
            if last >= 0:
                st.acq_bounces += 1
                ns = self._remote_ns if self.last_node != node else self._transfer_ns
            else:
                ns = self._acquire_ns
            self.last_cpu = cid
            self.last_node = node
        t.pending += ns
        self.owner = t
        self.owner_in_irq = bool(t.in_irq)
        self.acquired_at = now
        t.preempt_count += 1
        t.held.append(self)
        t.spinning = None
        t.blocked_on = None
        waited = now - since
        cpu.busy_ns += waited
        st.contentions += 1
        st.con_bounces += ticket.bounced
        st.waits[waited + ns] += 1
        tr = t._tracer
        if tr is not None:
            tr.span(cid, "lock", f"spin {self.name}", since, waited, t.name)

    def _spun(self, t: Thread, since: int, bounced: bool, handoff: int) -> None:
        """The lock was handed to the spinning `t`, which took its ticket at `since`: count
        the contention and its wait (from the ticket to the arrival of the lock's line,
        `handoff` ns after the hand-over)."""
        t.spinning = None
        t.blocked_on = None
        waited = self.env._now - since
        t.cpu.busy_ns += waited
        st = self.stat
        st.contentions += 1
        st.con_bounces += bounced
        st.waits[waited + handoff] += 1
        tr = t._tracer
        if tr is not None:
            tr.span(t.cpu.id, "lock", f"spin {self.name}", since, waited, t.name)

    def unlock(self, t: Thread) -> Gen:
        """spin_unlock: release at the thread's local time and hand the lock to the first
        spinning waiter at that time. With IRQs on the holder first synchronises with the
        other CPUs, so that an interrupt that arrives during the critical section (an IPI
        from another CPU included) is taken first, still holding the lock, as the hardware
        would take it; that synchronisation is skipped when it could change nothing: no
        interrupt is due on this CPU and no other event falls before the release
        (`quiet_until`), so an uncontended round trip on a quiet machine costs one event."""
        if not t.irqs_off and not t.in_irq and not quiet_until(t):
            yield from t.sync()
        self._release(t)

    def _release(self, t: Thread) -> None:
        """The release at the holder's local time (lockdep's lock_release: the hold), then
        the hand-over to the first waiter (`_grant_at`; its later case inlined).

        The release needs no sync: it takes effect at the holder's local time. An acquirer
        that arrives earlier in simulated time finds `free_at` in its future and spins until
        then, exactly as if the holder had synchronised before releasing."""
        env = self.env
        at = env._now + t.pending
        acquired = self.acquired_at
        held = at - acquired
        self.stat.holds[held] += 1
        tr = t._tracer
        if tr is not None:
            tr.span(t.cpu.id, "lock", f"hold {self.name}", acquired, held, t.name)
        t.held.remove(self)
        t.preempt_count -= 1
        ns = self._release_ns
        t.pending += ns  # Thread.charge, inlined
        if not self._batched and ns:
            t._steps.append(ns)
        self.owner = None
        self.free_at = at
        waiters = self.waiters
        if waiters:
            if at <= env._now:
                self._grant()
            else:
                ev = waiters[0][1]
                ev._ok = True
                heappush(env._queue, (at, NORMAL, next(env._eid), ev))  # env.schedule

    def _grant_at(self, at: int) -> None:
        """Hand the lock to the first waiter at `at`: now (`_grant`) if `at` is not ahead of
        the clock; later by scheduling the waiter's own event for `at`, which carries the
        rest of the hand-over (an IRQs-off `_Ticket` resumes its thread to do it,
        `_handover`; the others' first callback, set when they queued, is
        `_grant_on_wake`), so a hand-over costs one event; until then the lock stays free
        with its waiters queued, as it would be."""
        env = self.env
        if at <= env._now:
            self._grant()
        else:
            ev = self.waiters[0][1]
            ev._ok = True
            heappush(env._queue, (at, NORMAL, next(env._eid), ev))  # env.schedule, inlined

    def _grant(self) -> None:
        """The hand-over at the release's instant: the first waiter takes the lock now and
        its event, scheduled now (Event.succeed, inlined), resumes it with the ns of the
        take; an IRQs-off `_Ticket`'s thread then counts its wait itself (`_spun`, from the
        `since` kept on the ticket), and the later hand-over the others carry as their first
        callback goes: they count their own."""
        env = self.env
        nt, ev, since = self.waiters.popleft()
        ns = self._take(nt, env._now)
        if type(ev) is _Ticket:
            ev.since = since
        else:
            del ev.callbacks[0]
        ev._ok = True
        ev._value = ns
        heappush(env._queue, (env._now, NORMAL, next(env._eid), ev))

    def _grant_on_wake(self, ev: simpy.Event) -> None:
        """The later hand-over to a waiter that counts its own wait when it resumes (an
        IRQs-on spinner, a mutex waiter): the acquire alone."""
        nt, _ev, _since = self.waiters.popleft()
        ev._value = self._take(nt, self.env._now)

    def trylock(self, t: Thread) -> Gen:
        """spin_trylock: take the lock if it is free; never waits. Returns True on success."""
        yield from t.sync()
        if self.owner is None and not self.waiters and self.free_at <= self.env.now:
            self._take(t, self.env.now)
            return True
        t.charge("atomic_op")
        self._touch(t)
        return False

    def unlock_irqrestore(self, t: Thread, flags: bool) -> Iterable[Any]:
        """spin_unlock_irqrestore: release, then restore the saved IRQ state. Both usually
        need no synchronisation (IRQs are off at the release; no interrupt is due when they
        come back on): then this is a plain call and returns an empty tuple for the caller's
        `yield from`; otherwise it returns the generator that synchronises. Written out:
        the release (`_release`), then, back to IRQs on, local_irq_enable
        (`Thread.local_irq_enable_fast`: the IRQ-off section ends, `Thread._end_irq_off`)
        and a sync if an interrupt came meanwhile; the two charges are one sum on a
        batched clock."""
        if not t.irqs_off and not t.in_irq and not quiet_until(t):
            return self._unlock_irqrestore(t, flags)
        env = self.env  # _release, inlined
        clock = env._now
        p = t.pending
        at = clock + p
        acquired = self.acquired_at
        held = at - acquired
        self.stat.holds[held] += 1
        tr = t._tracer
        if tr is not None:
            tr.span(t.cpu.id, "lock", f"hold {self.name}", acquired, held, t.name)
        t.held.remove(self)
        t.preempt_count -= 1
        self.owner = None
        self.free_at = at
        waiters = self.waiters
        if waiters:
            if at <= clock:
                self._grant()
            else:
                ev = waiters[0][1]
                ev._ok = True
                heappush(env._queue, (at, NORMAL, next(env._eid), ev))  # env.schedule
        ns = self._release_ns
        if flags:
            t.pending = p + ns
            if not self._batched and ns:
                t._steps.append(ns)
            return ()
        en = self._irq_enable_ns  # local_irq_enable, inlined
        p += ns + en
        t.pending = p
        if not self._batched:
            steps = t._steps
            if ns:
                steps.append(ns)
            if en:
                steps.append(en)
        now = clock + p
        cpu = t.cpu
        if t.irqs_off:
            t.irqs_off = False  # Thread._end_irq_off and irq_off_section, inlined
            start = t.irq_off_start
            length = now - start
            cpu.irq_off_total += length
            if length > cpu.irq_off_max:
                cpu.irq_off_max = length
            t._irq_off_tally[length] += 1
            if tr is not None:
                tr.span(cpu.id, "irq", "IRQs off", start, length, t.name)
        irqs = cpu.irqs
        if irqs and irqs[0].at <= now:
            return t.sync()
        return ()

    def _unlock_irqrestore(self, t: Thread, flags: bool) -> Gen:
        yield from self.unlock(t)
        yield from t.local_irq_restore(flags)

    def holder_info(self) -> dict[str, Any]:
        o = self.owner
        if o is None:
            return {}
        return {"thread": o.name, "cpu": o.cpu.id, "since": self.acquired_at,
                "context": "irq" if self.owner_in_irq else "process"}
