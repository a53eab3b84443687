"""Timers and delayed work: periodic per-CPU work (Linux cache_reap) and global periodic work
(Solaris kmem_update), each run by a kernel thread that needs a CPU; cancellable one-shot
timers (`TimerQueue`) for the timed waits of wait queues."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

import simpy
from simpy.core import NORMAL

from simcore.cpu import Gen, Thread
from simcore.sched import NICE_0, Priority


class PeriodicWork:
    """schedule_delayed_work re-armed at the end of each run: `func(t)` runs every `period` ns
    after the previous run ended, first after `first_delay` ns."""

    def __init__(self, machine: Any, name: str, period: int, func: Callable[[Thread], Gen],
                 cpu: int | None = None, first_delay: int | None = None,
                 pri: Priority = NICE_0) -> None:
        self.machine = machine
        self.name = name
        self.period = period
        """Re-arm delay, ns."""
        self.func = func
        self.first_delay = period if first_delay is None else first_delay
        self.runs = 0
        """Completed runs."""
        self.cancelled = False
        self.thread = machine.spawn(name, self._loop, cpu=cpu, pri=pri)
        """The kworker thread that runs the work (SCHED_NORMAL nice 0 unless `pri`)."""

    def _loop(self, t: Thread) -> Gen:
        yield from t.sleep(self.first_delay)
        while not self.cancelled:
            yield from self.func(t)
            self.runs += 1
            yield from t.cond_resched()
            yield from t.sleep(self.period)

    def cancel(self) -> None:
        """cancel_delayed_work: no further runs."""
        self.cancelled = True


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
