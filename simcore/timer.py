"""Timers and delayed work: periodic per-CPU work (Linux cache_reap) and global periodic work
(Solaris kmem_update), each run by a kernel thread that needs a CPU. (The cancellable
one-shot timers of timed waits, `TimerQueue`, are in simcore.waitqueue, their one user.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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

