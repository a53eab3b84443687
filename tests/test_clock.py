"""simcore.Clock against simpy.Environment: the same events in the same order, the same
handling of `until` (a time, an event, none), of a failure nobody defused and of an until
event that is never triggered."""

from __future__ import annotations

from typing import Any

import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from simcore.clock import Clock

_plans = st.lists(st.lists(st.integers(0, 50), min_size=1, max_size=6), min_size=1, max_size=5)


def _trace(env: simpy.Environment, plan: list[list[int]], until: Any) -> list[Any]:
    """Processes that sleep the delays of `plan`, one waking another's event on the way."""
    seen: list[Any] = []
    shared = env.event()

    def proc(i: int, delays: list[int]) -> Any:
        for d in delays:
            yield env.timeout(d)
            seen.append((env.now, i))
            if i == 0 and not shared.triggered:
                shared.succeed(env.now)
        if i == len(plan) - 1 and len(plan) > 1:
            seen.append(("shared", (yield shared)))

    for i, delays in enumerate(plan):
        env.process(proc(i, delays))
    stop = until(env) if callable(until) else until
    seen.append(("ret", env.run(stop)))
    seen.append(("now", env.now))
    return seen


@settings(max_examples=80, deadline=None)
@given(_plans, st.sampled_from([None, 30, "event"]))
def test_clock_runs_events_in_simpys_order(plan, until):
    def stop(env: simpy.Environment) -> Any:
        return env.timeout(25, value="stopped") if until == "event" else until
    assert _trace(Clock(), plan, stop) == _trace(simpy.Environment(), plan, stop)


def test_a_run_can_resume_after_until():
    env = Clock()
    seen = []

    def proc():
        for _ in range(4):
            yield env.timeout(10)
            seen.append(env.now)

    env.process(proc())
    env.run(25)
    assert seen == [10, 20] and env.now == 25
    env.run()
    assert seen == [10, 20, 30, 40]


def test_an_undefused_failure_crashes_the_run():
    env = Clock()

    def proc():
        yield env.timeout(5)
        raise ValueError("boom")

    env.process(proc())
    with pytest.raises(ValueError, match="boom"):
        env.run()
    assert env.now == 5


def test_until_checks():
    env = Clock()
    env.run(10)
    with pytest.raises(ValueError):
        env.run(5)
    with pytest.raises(RuntimeError, match="No scheduled events left"):
        env.run(env.event())
