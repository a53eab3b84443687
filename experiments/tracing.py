"""`--trace` and `--trace-window` for `kmemsim run` and `kmemsim scenario`: which part of a run
goes into trace.json (simcore.trace records it).

A scenario variant traced without a window gets the window around its key event: the first
DEADLOCKED, else the deadlock report if the variant ended in one, else the first emergency
object, direct reclaim or sleep in atomic context; from `KEY_BEFORE` before it to `KEY_AFTER`
after. (A deadlock's report and its threads' open waits are written whatever the window.) Runs are
deterministic, so the variant is run once to find the event and once more to record the window.
"""

from __future__ import annotations

import argparse
from typing import Any

import pandas as pd

from experiments.problems import positive_int
from simcore.trace import DEFAULT_MAX_EVENTS, TraceRecorder, parse_window

KEY_EVENTS = ("emergency_alloc", "direct_reclaim", "sleep_in_atomic")
"""Event kinds that mark a scenario's key moment when there is no DEADLOCKED and no deadlock,
in order of preference."""
KEY_BEFORE = 20_000_000
"""Window start before the key event, ns."""
KEY_AFTER = 5_000_000
"""Window end after the key event, ns."""


def _window(text: str) -> tuple[int, int | None]:
    try:
        return parse_window(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(p: argparse.ArgumentParser, scenario: bool = False) -> None:
    """Register --trace, --trace-window and --trace-events on a subcommand."""
    where = ("each variant's folder (default window: around its key event, e.g. the deadlock "
             "or the first DEADLOCKED)" if scenario else "the run folder (default: whole run)")
    p.add_argument("--trace", action="store_true",
                   help=f"write trace.json (Chrome trace-event format: ui.perfetto.dev, "
                   f"chrome://tracing) into {where}")
    p.add_argument("--trace-window", type=_window, metavar="START:END",
                   help="only this span of simulated time, e.g. 100ms:120ms (implies --trace)")
    p.add_argument("--trace-events", type=positive_int, default=DEFAULT_MAX_EVENTS, metavar="N",
                   help=f"at most N trace events (default {DEFAULT_MAX_EVENTS:,})")


def wanted(args: argparse.Namespace) -> bool:
    return bool(args.trace or args.trace_window)


def recorder(args: argparse.Namespace, window: tuple[int, int | None] | None = None
             ) -> TraceRecorder | None:
    """The recorder the arguments ask for (None without --trace / --trace-window)."""
    if not wanted(args):
        return None
    start, end = args.trace_window or window or (0, None)
    return TraceRecorder(start, end, args.trace_events)


def key_window(summary: dict[str, Any], events: pd.DataFrame) -> tuple[int, int | None]:
    """The default trace window of a scenario variant (see the module docstring)."""
    at = None
    dl = summary.get("deadlock")
    first = events.loc[events.kind == "deadlocked_set", "time_ns"]
    if len(first):
        at = int(first.min())
    elif dl:
        at = int(dl["time_ns"])
    else:
        for kind in KEY_EVENTS:
            sel = events.loc[events.kind == kind, "time_ns"]
            if len(sel):
                at = int(sel.min())
                break
    if at is None:
        return 0, None
    return max(0, at - KEY_BEFORE), at + KEY_AFTER
