"""Wait queues and atomic bit flags with the kernel's sleeping and wake-up semantics.

A waiter checks its condition, sleeps, and checks again when it runs after a wake-up; a wake-up
that happens before the condition is true is therefore lost, and the waiter sleeps on until the
next wake-up or its timeout (the hazard behind zfs#9989).

Modelling choice: a woken waiter re-checks its condition at the instant it gets its CPU back and
is charged the context switch after the check. This stands for the wake-up preemption and
idle-polling paths in which the woken thread runs before the waker's next few instructions,
which is what made the zfs#9989 race frequent in practice; charging the switch first would hide
every ordering bug shorter than a context switch.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

import simpy
from simpy.core import NORMAL
from simpy.events import PENDING

from simcore.cpu import Gen, Thread


class Timer:
    """One armed timer of a `TimerQueue` (struct timer_list): `func(arg)` runs when it
    expires, unless it was cancelled first."""

    __slots__ = ("func", "arg", "programmed")

    def __init__(self, func: Callable[[Any], Any] | None, arg: Any) -> None:
        self.func = func
        """What runs at expiry; None once the timer expired or was cancelled."""
        self.arg = arg
        """Its argument (timer_list.data)."""
        self.programmed = False
        """The timer has its own entry in SimPy's queue."""


class TimerQueue:
    """One-shot timers that can be cancelled, of which SimPy's queue holds only the earliest,
    as a timer base programs the clock-event device for its first expiry (lib/timerqueue.c,
    kernel/time/hrtimer.c): the others wait in this queue's own heap, so SimPy's heap stays
    as deep as the machine's other pending events.

    Exactness with one `simpy.Timeout` per timer: a timer takes its SimPy event id when it is
    armed, and its entry keeps it when it is programmed later, so among the events due at its
    instant it fires exactly where the timeout would; its function runs from that entry's
    callback, as the timeout's callback would. A cancelled timer stays in the heap until its
    instant, and the earliest one is programmed like a live one and fires as a no-op: SimPy's
    queue then has an event at that instant, as the timeout of a wait that ended early would
    still be pending, and whoever looks at the earliest pending event (`quiet_until` of the
    locks) sees the same instant. Cancelled timers due at one instant are one entry: the
    last of them, whose id says when the last such timeout would have left the queue.
    """

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self._heap: list[tuple[int, int, Timer]] = []
        """Armed timers by (expiry, event id), cancelled ones included."""

    def arm(self, delay: int, func: Callable[[Any], Any], arg: Any = None) -> Timer:
        """add_timer: `func(arg)` runs `delay` ns from the simulation clock's now."""
        env = self.env
        timer = Timer(func, arg)
        key = (env._now + delay, next(env._eid), timer)
        heap = self._heap
        if not heap or key < heap[0]:
            self._program(key)
        heapq.heappush(heap, key)
        return timer

    @staticmethod
    def cancel(timer: Timer) -> None:
        """del_timer: the timer will not run (a no-op once it expired)."""
        timer.func = None

    def _program(self, key: tuple[int, int, Timer]) -> None:
        """Give the timer its entry in SimPy's queue, under the event id it took when armed."""
        env = self.env
        ev = simpy.Event(env)
        ev._ok = True
        ev._value = None
        ev.callbacks.append(self._expire)
        key[2].programmed = True
        heapq.heappush(env._queue, (key[0], NORMAL, key[1], ev))  # env.schedule, inlined

    def _expire(self, _ev: simpy.Event) -> None:
        """The earliest timer's instant: drop it, program the next one and run the expired
        timer's function (none for a cancelled one)."""
        heap = self._heap
        timer = heapq.heappop(heap)[2]
        func = timer.func
        if heap and not heap[0][2].programmed:
            key = heap[0]
            if key[2].func is None:  # cancelled: one entry for those due at its instant
                at = key[0]
                heapq.heappop(heap)
                while (heap and heap[0][0] == at and heap[0][2].func is None
                       and not heap[0][2].programmed):
                    key = heapq.heappop(heap)
                heapq.heappush(heap, key)
            self._program(key)
        if func is not None:
            timer.func = None
            func(timer.arg)


def _time_out(ev: simpy.Event) -> None:
    """A timed wait's timer expired: trigger the wait unless a wake-up triggered it first."""
    if ev._value is PENDING:
        ev.succeed()


def _wake_timed(kick: simpy.Event) -> None:
    """The second step of waking timed waiters: trigger each wait event the timer has not
    triggered first (`kick`'s value is the list)."""
    for ev in kick._value:
        if ev._value is PENDING:
            ev.succeed()


class WaitQueue:
    """wait_queue_head_t: `wait_event`, `wait_event_timeout`, `wake_up_all`.

    A timed wait sleeps on one event that its timer (a `TimerQueue` timer, cancelled when the
    wait ends early) and the waker both trigger, whichever comes first. Event order is that of
    a wait on `AnyOf(wake event, Timeout)`: a timeout triggers the wait one event after the
    timer's own, and a wake-up one event after the waker's, so `wake_up_all` schedules one
    event for every run of consecutive timed waiters (their wake events would have been
    consecutive) whose callback triggers their waits in queue order.
    """

    def __init__(self, machine: Any, name: str) -> None:
        self.machine = machine
        self.env = machine.env
        self.name = name
        self.waiters: list[tuple[Thread, simpy.Event, Timer | None]] = []
        """Sleeping threads with the event that wakes each and its timeout's timer."""
        self.wakers: list[Any] = []
        """Who is expected to wake this queue (threads or tasks), for the deadlock detector."""
        self.timers = TimerQueue(self.env)
        """The timeouts of the timed waits."""

    def __repr__(self) -> str:
        return f"<WaitQueue {self.name}>"

    def _sleep(self, t: Thread, timeout: int | None) -> Gen:
        ev = self.env.event()
        if timeout is None:
            entry = (t, ev, None)
            self.waiters.append(entry)
            yield from t.block(ev, self, switch_cost=False)
        else:
            timer = self.timers.arm(timeout, _time_out, ev)
            entry = (t, ev, timer)
            self.waiters.append(entry)
            yield from t.block(ev, self, switch_cost=False, timed=True)
            TimerQueue.cancel(timer)
        if entry in self.waiters:
            self.waiters.remove(entry)

    def _wake_and_recheck(self, t: Thread, timeout: int | None) -> Gen:
        """Sleep, then get back to the point where the condition is re-checked. Going to sleep
        takes a context switch: a wake-up that arrives before the switch is complete finds the
        thread still on its way out, and it re-checks at once (then pays the switch); a thread
        that really slept is switched back in first and re-checks after that. This is the
        window in which a waker that wakes before it changes the condition (zfs#9989) is
        missed. A timeout is noticed at the instant it fires (the switch is charged after).
        """
        slept = self.env.now
        yield from self._sleep(t, timeout)
        now = self.env.now
        timed_out = timeout is not None and now - slept >= timeout
        if not timed_out and now - slept >= t.machine.costs.values["context_switch"]:
            t.charge("context_switch")
            yield from t.sync()
        else:
            t.charge("context_switch")

    def wait_event_timeout(self, t: Thread, cond: Callable[[], bool], timeout: int) -> Gen:
        """Sleep until `cond()` holds or `timeout` ns pass. Returns 0 if the condition is still
        false when the time is up, else the time left (at least 1), as the kernel does."""
        yield from t.sync()
        if cond():
            return max(timeout, 1)
        deadline = self.env.now + timeout
        while True:
            yield from self._wake_and_recheck(t, deadline - self.env.now)
            ok = cond()
            now = self.env.now
            if ok:
                return max(deadline - now, 1)
            if now >= deadline:
                return 0

    def wait_event(self, t: Thread, cond: Callable[[], bool]) -> Gen:
        """Sleep until `cond()` holds (no timeout)."""
        yield from t.sync()
        while not cond():
            yield from self._wake_and_recheck(t, None)

    def wake_up_all(self, t: Thread | None) -> Gen:
        """__wake_up: under the queue's lock, taken with spin_lock_irqsave, make every sleeping
        waiter runnable (`wake_up` each); each re-checks its own condition when it runs.
        Interrupts that arrive during the wake loop are taken at the spin_unlock_irqrestore,
        before the waker's next statement. A woken thread reaches a CPU after the wake-up costs
        (`Thread.get_cpu`) and preempts the waker only by the scheduler's rules, at the waker's
        next preemption point (`Thread.wakeup_preempt`)."""
        if t is not None:
            yield from t.sync()
        waiters, self.waiters = self.waiters, []
        if t is None:
            self._wake(waiters)
            return
        was_off = t.local_irq_save()
        self._wake(waiters)
        t.charge("wake_up", len(waiters))
        yield from t.local_irq_restore(was_off)
        if waiters:
            yield from t.wakeup_preempt()

    def _wake(self, waiters: list[tuple[Thread, simpy.Event, Timer | None]]) -> None:
        """The wake loop: an untimed waiter's event is triggered now; a run of consecutive
        timed waiters shares one event, and its callback triggers their waits (`_wake_timed`)
        where the wake events of AnyOf waits would have triggered them (a wait that its
        timer triggered first is left alone then, as the AnyOf would have been: the event is
        scheduled all the same, as that wake event would have been)."""
        batch: list[simpy.Event] | None = None
        for _wt, ev, timer in waiters:
            if timer is None:
                if ev._value is PENDING:
                    ev.succeed()
                batch = None
            elif batch is None:
                batch = [ev]
                kick = self.env.event()
                kick.callbacks.append(_wake_timed)
                kick.succeed(batch)
            else:
                batch.append(ev)


class BitFlags:
    """An unsigned long of flag bits with atomic ops and wait_on_bit / wake_up_bit."""

    def __init__(self, machine: Any, name: str) -> None:
        self.machine = machine
        self.env = machine.env
        self.name = name
        self.value = 0
        """Current bits."""
        self._waiters: dict[int, list[tuple[Thread, simpy.Event]]] = {}

    def peek(self, bit: int) -> bool:
        """Read a bit without synchronising (statistics and reports only)."""
        return bool(self.value >> bit & 1)

    def test_and_set_bit(self, t: Thread, bit: int) -> Gen:
        """Set the bit; return whether it was already set."""
        yield from t.sync()
        t.charge("atomic_op")
        old = bool(self.value >> bit & 1)
        self.value |= 1 << bit
        return old

    def set_bit(self, t: Thread, bit: int) -> Gen:
        yield from t.sync()
        t.charge("atomic_op")
        self.value |= 1 << bit

    def clear_bit(self, t: Thread, bit: int) -> Gen:
        """Clear the bit. Waiters are not woken: that takes `wake_up_bit`."""
        yield from t.sync()
        t.charge("atomic_op")
        self.value &= ~(1 << bit)

    def test_bit(self, t: Thread, bit: int) -> Gen:
        yield from t.sync()
        return bool(self.value >> bit & 1)

    def wait_on_bit(self, t: Thread, bit: int) -> Gen:
        """Sleep until the bit is clear; re-checked after every wake_up_bit."""
        yield from t.sync()
        while self.value >> bit & 1:
            ev = self.env.event()
            self._waiters.setdefault(bit, []).append((t, ev))
            yield from t.block(ev, ("bit", self, bit), switch_cost=False)
            again = self.value >> bit & 1
            t.charge("context_switch")
            if not again:
                break

    def wake_up_bit(self, t: Thread, bit: int) -> Gen:
        """Wake every thread waiting on the bit."""
        yield from t.sync()
        for _wt, ev in self._waiters.pop(bit, []):
            ev.succeed()
            t.charge("wake_up")

    def waiters(self, bit: int) -> list[Thread]:
        return [wt for wt, _ in self._waiters.get(bit, [])]
