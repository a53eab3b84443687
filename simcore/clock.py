"""The simulation clock: SimPy's Environment with its event loop written out.

`Environment.run` calls `Environment.step` once per event; `Clock.run` does the same work
(pop the earliest (time, priority, id, event), run its callbacks, crash on an undefused
failure, stop at `until`) in one loop, without a method call per event. Events are processed
in exactly the order SimPy processes them; only the cost per event differs.
"""

from __future__ import annotations

from heapq import heappop
from typing import Any

import simpy
from simpy.core import EmptySchedule, StopSimulation
from simpy.events import URGENT, Event


class Clock(simpy.Environment):
    """simpy.Environment whose `run` steps through the event queue in one loop."""

    def run(self, until: Any = None) -> Any:
        """simpy.Environment.run (same semantics: `until` a time or an event, or None to run
        until no event is left), with `step` inlined."""
        if until is not None:
            if not isinstance(until, Event):
                at = until if isinstance(until, int) else float(until)
                if at <= self._now:
                    raise ValueError(
                        f"until ({at}) must be greater than the current simulation time")
                until = Event(self)
                until._ok = True
                until._value = None
                self.schedule(until, URGENT, at - self._now)
            elif until.callbacks is None:
                return until.value
            until.callbacks.append(StopSimulation.callback)
        queue = self._queue
        try:
            while True:
                try:
                    self._now, _, _, event = heappop(queue)
                except IndexError:
                    raise EmptySchedule from None
                callbacks, event.callbacks = event.callbacks, None
                try:
                    for callback in callbacks:
                        callback(event)
                except StopSimulation:
                    event.callbacks = callbacks[callbacks.index(callback) + 1:]
                    self.schedule(event, -1)
                    raise
                if not event._ok and not hasattr(event, "_defused"):
                    exc = type(event._value)(*event._value.args)
                    exc.__cause__ = event._value
                    raise exc
        except StopSimulation as exc:
            return exc.args[0]
        except EmptySchedule:
            if until is not None:
                raise RuntimeError(
                    f'No scheduled events left but "until" event was not triggered: {until}'
                ) from None
        return None
