"""A timeline of every CPU in the Chrome trace-event format (ui.perfetto.dev, chrome://tracing).

`TraceRecorder.attach(machine)` turns recording on; the simulator's hooks then report:

- the thread running on each CPU (`on_cpu`, called where a CPU changes hands);
- IRQ-disabled sections, spin-waits and holds of every spinlock, taskq work items (`span`);
- the event log's events: growth, reaping, emergency objects, DEADLOCKED, ... (`instant`).

Every hook is guarded by one attribute test (`machine.tracer`, `Thread._tracer`, `Metrics.tracer`
is None when tracing is off). Tracks: one process "CPUs" with, per CPU n, the thread tracks
"CPU n" (the thread running), "CPU n IRQs off", "CPU n taskq" (work items: they may sleep, so
they do not nest in the running spans) and "CPU n locks" (spin and hold spans). Spans that
overlap without nesting, which the trace-event format cannot draw on one track, go to extra
lanes ("CPU n locks #2", ...). Events of no CPU go to a "machine" track.

Size is bounded: only what overlaps the window [start, end] is kept (spans are clipped to it),
and at most `max_events` events; the rest is counted. The window, the cap and the counts are in
the document's "metadata". At `finish`, spans still open (a lock held, a spin or a sleep that
never ended: a deadlock's threads) are written up to the end time (clipped to the window),
marked "open" and kept whatever the cap; the deadlock report becomes an instant at its time
whatever the window.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simcore.cpu import CPU, Thread
    from simcore.deadlock import DeadlockReport
    from simcore.machine import Machine

PID = 1
"""The one process of the trace: the machine's CPUs."""
CPU_STRIDE = 1000
"""Track ids of CPU n: n * CPU_STRIDE + offset (0 running thread, 1 IRQs off, lanes below)."""
LANES = {"taskq": (100, 400, "taskq"), "lock": (500, 500, "locks")}
"""Tracks whose spans may overlap without nesting, spread over lanes: (offset, most lanes,
title); CPU n's lane k has track id n * CPU_STRIDE + offset + k (spans beyond the last lane
share it)."""
MACHINE_TID = 99_999_999
"""Track of events tied to no CPU."""
DEFAULT_MAX_EVENTS = 200_000


def _us(ns: int) -> float:
    """Trace-event timestamps are microseconds."""
    return ns / 1000


class TraceRecorder:
    """Collects trace events within a window of simulated time (ns)."""

    def __init__(self, start: int = 0, end: int | None = None,
                 max_events: int = DEFAULT_MAX_EVENTS) -> None:
        self.start = start
        self.end = end
        """Window end, ns (None: the end of the run)."""
        self.max_events = max_events
        self.machine: Machine | None = None
        self.spans: list[tuple[int, str, str, int, int, str, dict[str, Any]]] = []
        """(cpu, track, name, start, duration, thread, args); cpu -1 = no CPU."""
        self.instants: list[tuple[int, str, int, dict[str, Any]]] = []
        self.dropped: Counter[str] = Counter()
        """Events not kept because the cap was reached, by track."""
        self._running: dict[int, tuple[str, int]] = {}
        """CPU id -> (thread name, since) of the running span not yet closed."""

    # --- attaching ------------------------------------------------------------------------
    def attach(self, machine: Machine) -> None:
        """Record `machine` from now on (its existing threads included)."""
        self.machine = machine
        machine.tracer = self
        machine.metrics.tracer = self
        for cpu in machine.cpus:
            cpu.idle_thread._tracer = self
            if cpu.current is not None:
                self._running[cpu.id] = (cpu.current.name, machine.env.now)
        for t in machine.threads:
            t._tracer = self

    def _room(self, track: str) -> bool:
        if len(self.spans) + len(self.instants) >= self.max_events:
            self.dropped[track] += 1
            return False
        return True

    # --- hooks ----------------------------------------------------------------------------
    def span(self, cpu: int, track: str, name: str, start: int, dur: int, thread: str,
             open: bool = False) -> None:
        """A span on CPU `cpu`'s track ("run", "irq", "lock" or "taskq"); `open` marks one
        still going at the end (kept whatever the cap)."""
        end = start + dur
        if end < self.start or (self.end is not None and start > self.end):
            return
        if not open and not self._room(track):
            return
        lo = max(start, self.start)
        hi = end if self.end is None else min(end, self.end)
        self.spans.append((cpu, track, name, lo, hi - lo, thread, {"open": True} if open else {}))

    def on_cpu(self, cpu: CPU, thread: Thread | None) -> None:
        """CPU `cpu` now runs `thread` (None: idle); closes the previous thread's span."""
        now = cpu.machine.env.now
        prev = self._running.pop(cpu.id, None)
        if prev is not None and now > prev[1]:
            self.span(cpu.id, "run", prev[0], prev[1], now - prev[1], prev[0])
        if thread is not None:
            self._running[cpu.id] = (thread.name, now)

    def instant(self, kind: str, time: int, fields: dict[str, Any], force: bool = False) -> None:
        """An event-log event (growth, reap, DEADLOCKED, emergency object, ...); `force` keeps
        it whatever the window and the cap (the deadlock report)."""
        if not force:
            if time < self.start or (self.end is not None and time > self.end):
                return
            if not self._room("instant"):
                return
        cpu = fields.get("cpu", -1)
        self.instants.append((cpu if isinstance(cpu, int) else -1, kind, time,
                              {k: v for k, v in fields.items() if k != "cpu"}))

    def finish(self, report: DeadlockReport | None = None) -> None:
        """Close what is still open at the current time: running threads, locks held, spins
        and sleeps (a deadlock's threads); add the deadlock report as an instant."""
        m = self.machine
        if m is None:
            return
        now = m.env.now
        for cpu_id, (name, since) in sorted(self._running.items()):
            self.span(cpu_id, "run", name, since, now - since, name, open=True)
        self._running.clear()
        for lk in m.metrics.locks:
            o = lk.owner
            if o is not None:
                self.span(o.cpu.id, "lock", f"hold {lk.name}", lk.acquired_at, now - lk.acquired_at,
                          o.name, open=True)
        for t in [*m.threads, *(c.idle_thread for c in m.cpus)]:
            if t.blocked_on is None or not t.alive or t.cpu is None:
                continue
            what = getattr(t.blocked_on, "name", None) or _describe(t.blocked_on)
            kind = "spin" if t.spinning is not None else "wait"
            self.span(t.cpu.id, "lock", f"{kind} {what}", t.blocked_since, now - t.blocked_since,
                      t.name, open=True)
        if report is not None:
            self.instant(f"deadlock report: {report.kind}", report.time,
                         {"summary": report.summary, "cycle": report.cycle,
                          "threads": [s.line().strip() for s in report.threads]}, force=True)

    # --- the document ---------------------------------------------------------------------
    def document(self, end_ns: int | None = None) -> dict[str, Any]:
        """The trace as a JSON-serialisable Chrome trace-event document."""
        m = self.machine
        ncpu = m.ncpus if m is not None else 1 + max((s[0] for s in self.spans), default=0)
        events: list[dict[str, Any]] = [
            {"ph": "M", "pid": PID, "tid": 0, "name": "process_name", "args": {"name": "CPUs"}}]
        names: dict[int, str] = {MACHINE_TID: "machine"}
        for c in range(ncpu):
            names[c * CPU_STRIDE] = f"CPU {c}"
            names[c * CPU_STRIDE + 1] = f"CPU {c} IRQs off"
        body: list[dict[str, Any]] = []
        lanes: dict[tuple[int, str], list[list[int]]] = {}
        for cpu, track, name, start, dur, thread, args in sorted(
                self.spans, key=lambda s: (s[0], s[1], s[3], -s[4], s[2])):
            if cpu < 0:
                tid = MACHINE_TID
            elif track == "irq":
                tid = cpu * CPU_STRIDE + 1
            elif track in LANES:
                base, most, title = LANES[track]
                k = min(most - 1, _lane(lanes.setdefault((cpu, track), []), start, start + dur))
                tid = cpu * CPU_STRIDE + base + k
                names[tid] = f"CPU {cpu} {title}" + (f" #{k + 1}" if k else "")
            else:
                tid = cpu * CPU_STRIDE
            ev = {"ph": "X", "pid": PID, "tid": tid, "name": name, "cat": track,
                  "ts": _us(start), "dur": _us(dur), "args": {"thread": thread, **args}}
            body.append(ev)
        for cpu, kind, time, fields in self.instants:
            tid = cpu * CPU_STRIDE if 0 <= cpu < ncpu else MACHINE_TID
            body.append({"ph": "i", "s": "t" if tid != MACHINE_TID else "g", "pid": PID,
                         "tid": tid, "name": kind, "cat": "event", "ts": _us(time),
                         "args": json.loads(json.dumps(fields, default=str))})
        for tid, name in sorted(names.items()):
            events.append({"ph": "M", "pid": PID, "tid": tid, "name": "thread_name",
                           "args": {"name": name}})
            events.append({"ph": "M", "pid": PID, "tid": tid, "name": "thread_sort_index",
                           "args": {"sort_index": tid}})
        end = self.end if self.end is not None else end_ns
        return {"traceEvents": events + body, "displayTimeUnit": "ns",
                "metadata": {"generator": "kmemsim", "time_unit": "us (simulated time)",
                             "window_ns": [self.start, end], "max_events": self.max_events,
                             "events": len(self.spans) + len(self.instants),
                             "dropped": dict(sorted(self.dropped.items())),
                             "cpus": ncpu}}

    def text(self, end_ns: int | None = None) -> str:
        return json.dumps(self.document(end_ns), sort_keys=True, separators=(",", ":")) + "\n"


def _lane(lanes: list[list[int]], start: int, end: int) -> int:
    """The first lane where [start, end] nests inside the spans still open there (each lane is
    a stack of open end times); spans arrive sorted by start, longest first."""
    for k, stack in enumerate(lanes):
        while stack and stack[-1] <= start:
            stack.pop()
        if not stack or stack[-1] >= end:
            stack.append(end)
            return k
    lanes.append([end])
    return len(lanes) - 1


def _describe(what: Any) -> str:
    if isinstance(what, tuple):
        return ":".join(_describe(w) for w in what)
    return getattr(what, "name", str(what))


def parse_window(text: str) -> tuple[int, int | None]:
    """`--trace-window START:END` (durations such as 10ms:20ms; END may be empty)."""
    from simcore.units import parse_duration
    if ":" not in text:
        raise ValueError(f"expected START:END (e.g. 100ms:120ms), got {text!r}")
    a, b = text.split(":", 1)
    start = parse_duration(a) if a.strip() else 0
    end = parse_duration(b) if b.strip() else None
    if end is not None and end <= start:
        raise ValueError(f"END must be after START, got {text!r}")
    return start, end
