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

    def __init__(self, func: Callable[[Any], Any], arg: Any) -> None:
        self.func: Callable[[Any], Any] | None = func
        """What runs at expiry; None once the timer expired or was cancelled."""
        self.arg = arg
        """Its argument (timer_list.data)."""
        self.programmed = False
        """The timer has its own entry in SimPy's queue (it is, or was, the earliest)."""


class TimerQueue:
    """One-shot timers that can be cancelled, with only the earliest one in SimPy's queue,
    as a timer base programs the clock-event device for its first expiry (lib/timerqueue.c,
    kernel/time/hrtimer.c). A timer that is cancelled before it becomes the earliest never
    reaches SimPy's queue, so a wait that ends early (a wake-up before the timeout) leaves no
    event behind to be popped later, and SimPy's heap holds the live timers only.

    Exactness: a timer takes its SimPy event id when it is armed, and its entry keeps it when
    it is programmed later, so among the events due at its instant it fires exactly where a
    `simpy.Timeout` created at arming time would fire (ties at one instant are broken by event
    id). Its expiry triggers what the timer guards from its own callback, one event later,
    as the timeout's callback would.
    """

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self._heap: list[tuple[int, int, Timer]] = []
        """Armed timers by (expiry, event id), including cancelled ones not yet dropped."""
        self._cancelled = 0
        """Cancelled timers still in `_heap`."""

    def __len__(self) -> int:
        """Timers armed and neither expired nor cancelled."""
        return len(self._heap) - self._cancelled

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

    def cancel(self, timer: Timer) -> None:
        """del_timer: the timer will not run (a no-op once it expired). Cancelled timers leave
        the heap when it is rebuilt, once they are the greater part of it."""
        if timer.func is None:
            return
        timer.func = None
        self._cancelled += 1
        heap = self._heap
        if self._cancelled > 64 and 2 * self._cancelled > len(heap):
            kept = [k for k in heap if k[2].func is not None or k[2].programmed]
            heapq.heapify(kept)
            self._heap = kept
            self._cancelled = sum(1 for k in kept if k[2].func is None)

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
        """The earliest timer's instant: drop it, program the next live one (cancelled ones
        before it are dropped on the way) and run the expired timer's function."""
        heap = self._heap
        timer = heapq.heappop(heap)[2]
        func = timer.func
        if func is None:
            self._cancelled -= 1
        while heap and not heap[0][2].programmed:
            if heap[0][2].func is not None:
                self._program(heap[0])
                break
            heapq.heappop(heap)
            self._cancelled -= 1
        if func is not None:
            timer.func = None
            func(timer.arg)
