"""Test helper: run one operation sequence as a thread on a CPU of a simulated machine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from simcore import Machine


def run_on(m: Machine, cpu: int, body: Callable[[Any], Any], span: int) -> None:
    """Run `body(t)` as a new thread pinned to `cpu` and advance the simulation by `span` ns
    (it jumps over idle time); fail if the body did not finish within it."""
    done = []

    def wrapper(t: Any) -> Any:
        yield from body(t)
        done.append(True)

    m.spawn(f"op{m.env.now}-{cpu}", wrapper, cpu=cpu)
    m.run(m.env.now + span)
    assert done, "operation did not finish"
