"""`trace`: replay a recorded allocation trace on the simulated machine.

Two formats (`format = "auto"` tells them apart by the first data line):

- CSV with a header `time_ns,cpu,op,cache,size,object` — op is `alloc` or `free`, `object` any
  identity string (a pointer, a counter); an object may be allocated again after it was freed.
- Linux ftrace text of the `kmem:kmem_cache_alloc`, `kmem:kmem_cache_free`, `kmem:kmalloc` and
  `kmem:kfree` events, as `trace-cmd report` and `/sys/kernel/tracing/trace_pipe` print them:

      <task>-<pid> [<cpu>] <flags> <seconds>.<usec>: kmem_cache_alloc: call_site=... ptr=0x...
          bytes_req=256 bytes_alloc=256 gfp_flags=GFP_KERNEL [node=-1] [name=dentry]

  Pointers become object identities (a pointer freed and handed out again is a new object).
  A `kmem_cache_alloc` event takes its cache from its `name=`; without one (kernels that print
  the name only on `kmem_cache_free`) from the `name=` of the next free of the same pointer;
  only when no free names it (and for kmalloc) does the object land in the size class
  `kmalloc-<bytes_alloc>`. `gfp_flags` containing GFP_ATOMIC or GFP_NOWAIT replays as
  KM_NOSLEEP. Other events in the file are skipped. `perf script` lines (`comm pid [cpu]`)
  are read too.

  The latency-format flags field after `[cpu]` (irqs-off, need-resched, hardirq/softirq,
  preempt-depth and, since Linux 5.14, migrate-disable: `d.h1`, `d.h2.`, `..s1.`; any width
  from 1 to 6 characters, or none as trace-cmd report prints by default) sets the event's
  context: `h`/`H` in the hardirq/softirq column replays the event as an interrupt handler on
  that CPU (raised there at the event's time: IRQs off, it must not sleep, and it counts in
  the summary's IRQs), `s` in softirq context (bottom halves and so preemption disabled: a
  sleep is "scheduling while atomic"), and `d`/`D` in the irqs-off column with IRQs disabled
  around the call.

Replay: trace CPU c runs on simulated CPU c mod (CPUs); each CPU's thread issues its events in
order, never before their trace time (scaled by `time_scale`); an event that finds the
simulation behind its time runs at once. A free issued on one CPU for an object allocated on
another waits until that allocation has happened in the simulation. Caches are created before
the replay starts, in order of first use (creation costs no simulated time either way).

Errors are bad input: a malformed line is reported as `file:line: reason`; a free of an object
the trace never allocated (or freed twice) is reported with its line too, unless
`unknown_frees = "skip"` (traces started while objects were live), which counts and skips them.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationInfo, model_validator

from simcore.cpu import Gen, Thread
from simcore.flags import KM_NOSLEEP, KM_SLEEP
from workloads.base import Workload, WorkloadParams

CSV_HEADER = ["time_ns", "cpu", "op", "cache", "size", "object"]
FTRACE_LINE = re.compile(
    r"^\s*(?P<task>.+?)(?:-|\s+)(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+"
    r"(?:(?P<flags>[dDXbBNnpZzHhs.0-9a-f]{1,6})\s+)?(?P<ts>\d+\.\d+):\s+"
    r"(?P<event>[\w:]+):\s*(?P<args>.*)$")
CONTEXTS = ("", "irq", "softirq", "irqs_off")
"""Replay contexts: process context, interrupt handler, softirq, process with IRQs off."""


def flags_context(flags: str | None) -> str:
    """The replay context of an event's latency-format flags (see the module docstring)."""
    if not flags:
        return ""
    if len(flags) >= 3 and flags[2] in "hH":
        return "irq"
    if len(flags) >= 3 and flags[2] == "s":
        return "softirq"
    if flags[0] in "dD":
        return "irqs_off"
    return ""
KMEM_EVENTS = {"kmem_cache_alloc": "alloc", "kmalloc": "alloc", "kmem_cache_free": "free",
               "kfree": "free"}


class TraceError(ValueError):
    """A trace that cannot be replayed; the message starts with `file:line:`."""


@dataclass(frozen=True)
class TraceOp:
    """One replayed event."""

    time_ns: int
    cpu: int
    op: str
    """alloc or free."""
    cache: str
    size: int
    obj: int
    """Object identity: a serial number per allocation."""
    flags: int
    line: int
    context: str = ""
    """One of CONTEXTS."""


@dataclass
class Trace:
    """A parsed trace: its events in file order and its caches in order of first use."""

    ops: list[TraceOp]
    caches: dict[str, int]
    """Cache name -> object size."""
    skipped_frees: list[int]
    """Lines of frees of objects the trace never allocated (unknown_frees = "skip")."""
    allocs: int = 0
    frees: int = 0
    contexts: dict[str, int] = field(default_factory=dict)
    """Events per replay context (ftrace flags)."""


class _Builder:
    """Turns (time, cpu, op, cache, size, identity) records into TraceOps, checking frees."""

    def __init__(self, path: Path, unknown_frees: str) -> None:
        self.path = path
        self.unknown = unknown_frees
        self.live: dict[str, tuple[int, str]] = {}
        self.serial = 0
        self.trace = Trace([], {}, [])
        self.t0: int | None = None

    def add(self, line: int, time_ns: int, cpu: int, op: str, cache: str, size: int,
            ident: str, flags: int, context: str = "") -> None:
        tr = self.trace
        if self.t0 is None:
            self.t0 = time_ns
        t = time_ns - self.t0
        if t < 0:
            raise TraceError(f"{self.path}:{line}: time goes backwards ({time_ns} ns is before "
                             f"the first event)")
        if op == "alloc":
            if ident in self.live:
                raise TraceError(f"{self.path}:{line}: object {ident} allocated again before "
                                 "it was freed")
            if size <= 0:
                raise TraceError(f"{self.path}:{line}: allocation size must be positive")
            have = tr.caches.setdefault(cache, size)
            if have != size:
                raise TraceError(f"{self.path}:{line}: cache {cache} has size {have}, this "
                                 f"event says {size}")
            self.serial += 1
            self.live[ident] = (self.serial, cache)
            tr.ops.append(TraceOp(t, cpu, "alloc", cache, size, self.serial, flags, line,
                                  context))
            tr.allocs += 1
            tr.contexts[context] = tr.contexts.get(context, 0) + 1
        else:
            got = self.live.pop(ident, None)
            if got is None:
                if self.unknown == "skip":
                    tr.skipped_frees.append(line)
                    return
                raise TraceError(f"{self.path}:{line}: free of object {ident} that the trace "
                                 "never allocated (or already freed); set "
                                 "unknown_frees = \"skip\" for traces started mid-flight")
            serial, alloc_cache = got
            tr.ops.append(TraceOp(t, cpu, "free", alloc_cache, tr.caches[alloc_cache], serial,
                                  KM_SLEEP, line, context))
            tr.frees += 1
            tr.contexts[context] = tr.contexts.get(context, 0) + 1


def _sniff(path: Path) -> str:
    """csv or ftrace, from the first line that is not blank or a comment: a line with a comma
    that is not an ftrace event line is a CSV header (checked, mistyped or not, by
    parse_csv)."""
    with path.open() as f:
        for raw in f:
            s = raw.strip()
            if not s or s.startswith("#"):
                continue
            if s.replace(" ", "").lower().startswith("time_ns,"):
                return "csv"
            return "csv" if "," in s and FTRACE_LINE.match(s) is None else "ftrace"
    raise TraceError(f"{path}:1: empty trace")


def parse_csv(path: Path, unknown_frees: str = "error") -> Trace:
    """Parse the CSV format (see the module docstring)."""
    b = _Builder(path, unknown_frees)
    with path.open(newline="") as f:
        rows = csv.reader(f)
        header_seen = False
        for line, row in enumerate(rows, start=1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            cells = [c.strip() for c in row]
            if not header_seen:
                if cells != CSV_HEADER:
                    raise TraceError(f"{path}:{line}: expected the header "
                                     f"{','.join(CSV_HEADER)}{_header_diff(cells)}")
                header_seen = True
                continue
            if len(cells) != len(CSV_HEADER):
                raise TraceError(f"{path}:{line}: expected {len(CSV_HEADER)} fields, got "
                                 f"{len(cells)}")
            time_s, cpu_s, op, cache, size_s, ident = cells
            try:
                time_ns, cpu = int(time_s), int(cpu_s)
                size = int(size_s) if size_s else 0
            except ValueError:
                raise TraceError(f"{path}:{line}: time_ns, cpu and size must be integers") \
                    from None
            if op not in ("alloc", "free"):
                raise TraceError(f"{path}:{line}: op must be alloc or free, got {op!r}")
            if cpu < 0:
                raise TraceError(f"{path}:{line}: cpu must be >= 0")
            if not ident:
                raise TraceError(f"{path}:{line}: empty object identity")
            if op == "alloc" and not cache:
                raise TraceError(f"{path}:{line}: an allocation needs a cache name")
            b.add(line, time_ns, cpu, op, cache, size, ident, KM_SLEEP)
    if not header_seen:
        raise TraceError(f"{path}:1: empty trace")
    if not b.trace.ops and not b.trace.skipped_frees:
        raise TraceError(f"{path}:{line}: no events after the header")
    return b.trace


def _header_diff(cells: list[str]) -> str:
    """What is wrong with a CSV header, for the error message."""
    unknown = [c for c in cells if c not in CSV_HEADER]
    missing = [c for c in CSV_HEADER if c not in cells]
    parts = []
    if unknown:
        parts.append(f"unknown column{'s' if len(unknown) > 1 else ''} "
                     f"{', '.join(map(repr, unknown))}")
    if missing:
        parts.append(f"missing {', '.join(missing)}")
    if not parts:
        parts.append("columns in another order")
    return " (" + "; ".join(parts) + ")"


def _kv(args: str) -> dict[str, str]:
    out = {}
    for part in args.split():
        k, sep, v = part.partition("=")
        if sep:
            out[k] = v
    return out


@dataclass
class _FtraceEvent:
    line: int
    time_ns: int
    cpu: int
    op: str
    event: str
    ptr: str
    size: int
    name: str
    flags: int
    context: str


def _read_ftrace(path: Path) -> list[_FtraceEvent]:
    """The kmem events of a trace-cmd / trace_pipe / perf script text file, in file order."""
    out = []
    with path.open() as f:
        for line, raw in enumerate(f, start=1):
            s = raw.rstrip("\n")
            if not s.strip() or s.lstrip().startswith("#") or s.startswith("cpus="):
                continue
            m = FTRACE_LINE.match(s)
            if m is None:
                raise TraceError(f"{path}:{line}: not an ftrace event line "
                                 "(task-pid [cpu] timestamp: event: args)")
            event = m["event"].rsplit(":", 1)[-1]
            op = KMEM_EVENTS.get(event)
            if op is None:
                continue
            kv = _kv(m["args"])
            ptr = kv.get("ptr")
            if ptr is None:
                raise TraceError(f"{path}:{line}: {event} without ptr=")
            if op == "free" and ptr in ("0x0", "(null)", "0000000000000000"):
                continue
            sec, usec = m["ts"].split(".")
            time_ns = int(sec) * 1_000_000_000 + int(usec.ljust(9, "0")[:9])
            size = 0
            flags = KM_SLEEP
            if op == "alloc":
                try:
                    size = int(kv.get("bytes_alloc") or kv["bytes_req"])
                except (KeyError, ValueError):
                    raise TraceError(f"{path}:{line}: {event} without a numeric "
                                     "bytes_alloc=") from None
                gfp = kv.get("gfp_flags", "")
                if "GFP_ATOMIC" in gfp or "GFP_NOWAIT" in gfp:
                    flags = KM_NOSLEEP
            name = kv.get("name", "") if event.startswith("kmem_cache_") else ""
            out.append(_FtraceEvent(line, time_ns, int(m["cpu"]), op, event, ptr, size, name,
                                    flags, flags_context(m["flags"])))
    return out


def _name_allocs_from_frees(events: list[_FtraceEvent]) -> None:
    """Give a kmem_cache_alloc without name= the name= of the next kmem_cache_free of the same
    pointer (the kernel prints the cache name only on frees)."""
    pending: dict[str, _FtraceEvent] = {}
    for ev in events:
        if ev.op == "alloc":
            if ev.event == "kmem_cache_alloc" and not ev.name:
                pending[ev.ptr] = ev
            else:
                pending.pop(ev.ptr, None)
        else:
            alloc = pending.pop(ev.ptr, None)
            if alloc is not None and ev.name:
                alloc.name = ev.name


def parse_ftrace(path: Path, unknown_frees: str = "error") -> Trace:
    """Parse `trace-cmd report` / trace_pipe / perf script text of the kmem events."""
    b = _Builder(path, unknown_frees)
    events = _read_ftrace(path)
    _name_allocs_from_frees(events)
    for ev in events:
        cache = ""
        if ev.op == "alloc":
            cache = ev.name or f"kmalloc-{ev.size}"
        b.add(ev.line, ev.time_ns, ev.cpu, ev.op, cache, ev.size, ev.ptr, ev.flags, ev.context)
    if not b.trace.ops and not b.trace.skipped_frees:
        raise TraceError(f"{path}:1: no kmem alloc/free events in the trace")
    return b.trace


def load_trace(path: Path, fmt: str = "auto", unknown_frees: str = "error") -> Trace:
    """Parse a trace file in either format; TraceError if it cannot be opened or read as
    text."""
    if path.is_dir():
        raise TraceError(f"{path}: is a directory, not a trace file")
    if not path.exists():
        raise TraceError(f"{path}: no such trace file")
    if not path.is_file():
        raise TraceError(f"{path}: not a regular file")
    try:
        kind = _sniff(path) if fmt == "auto" else fmt
        return (parse_csv if kind == "csv" else parse_ftrace)(path, unknown_frees)
    except UnicodeDecodeError as exc:
        raise TraceError(f"{path}: not a text file (byte {exc.start} is not UTF-8)") from None
    except csv.Error as exc:
        raise TraceError(f"{path}: malformed CSV ({exc})") from None
    except OSError as exc:
        raise TraceError(f"{path}: cannot read ({exc.strerror or exc})") from None


class TraceParams(WorkloadParams):
    file: str = Field(description="trace file, relative to the experiment file")
    format: Literal["auto", "csv", "ftrace"] = Field(default="auto",
                                                     description="trace format")
    time_scale: float = Field(default=1.0, gt=0,
                              description="multiply trace times by this (0.5: twice as fast)")
    unknown_frees: Literal["error", "skip"] = Field(default="error", description=(
        "a free of an object the trace never allocated: error (file:line) or skip"))
    cache_prefix: str = Field(default="", description="prefix added to trace cache names")
    _trace: Trace | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _load(self, info: ValidationInfo) -> TraceParams:
        base = Path((info.context or {}).get("base_dir", "."))
        path = Path(self.file)
        if not path.is_absolute():
            path = base / path
        self._trace = load_trace(path, self.format, self.unknown_frees)
        return self

    @property
    def trace(self) -> Trace:
        assert self._trace is not None
        return self._trace


class TraceReplay(Workload):
    """Replays a CSV or ftrace allocation trace, one thread per simulated CPU."""

    kind = "trace"
    summary = "replay a CSV or Linux ftrace (kmem events) allocation trace"
    Params = TraceParams

    @classmethod
    def creates(cls, params: TraceParams) -> list[str]:
        return [params.cache_prefix + n for n in params.trace.caches]

    def create_caches(self) -> None:
        p: TraceParams = self.params
        for name, size in p.trace.caches.items():
            self.ensure_cache(p.cache_prefix + name, size)

    def start(self) -> None:
        p: TraceParams = self.params
        n = self.machine.ncpus
        per_cpu: dict[int, list[TraceOp]] = defaultdict(list)
        for op in p.trace.ops:
            per_cpu[op.cpu % n].append(op)
        self.addr: dict[int, int] = {}
        """Trace object serial -> simulated address, while allocated."""
        self.waiting: dict[int, Any] = {}
        """Trace object serial -> event a cross-CPU free waits on until its alloc ran."""
        self.failed: set[int] = set()
        self.replayed_allocs = 0
        self.replayed_frees = 0
        self.skipped_frees = len(p.trace.skipped_frees)
        for cpu in sorted(per_cpu):
            ops = per_cpu[cpu]
            self.spawn(f"{self.label}/{cpu}", lambda t, ops=ops: self._thread(t, ops),
                               cpu=cpu)

    def _thread(self, t: Thread, ops: list[TraceOp]) -> Gen:
        """One trace CPU: each event at its time, in the context its flags give: process
        context, IRQs off (`d`), softirq (`s`: preemption off), or an interrupt raised on this
        CPU whose handler makes the call (`h`/`H`). A free waits (in process context) until
        its allocation has been replayed."""
        p: TraceParams = self.params
        scale = p.time_scale
        for op in ops:
            due = int(op.time_ns * scale)
            if due > t.now:
                yield from t.sleep(due - t.now)
            if op.op == "free" and op.obj not in self.addr and op.obj not in self.failed:
                ev = self.machine.env.event()
                self.waiting[op.obj] = ev
                yield from t.block(ev, ("trace_alloc", op.line))
            if op.context == "irq":
                yield from t.sync()
                self.machine.raise_irq(t.cpu.id, lambda h, op=op: self._op(h, op), self.label)
                yield from t.sync()
            elif op.context == "softirq":
                t.preempt_count += 1
                yield from self._op(t, op)
                t.preempt_count -= 1
            elif op.context == "irqs_off":
                irqf = t.local_irq_save()
                yield from self._op(t, op)
                yield from t.local_irq_restore(irqf)
            else:
                yield from self._op(t, op)
            yield from t.checkpoint()

    def _op(self, t: Thread, op: TraceOp) -> Gen:
        """The allocator call of one event."""
        cache = self.caches[self.params.cache_prefix + op.cache]
        if op.op == "alloc":
            obj = yield from self.alloc(t, cache, op.flags)
            self.replayed_allocs += 1
            if obj is None:
                self.failed.add(op.obj)
            else:
                self.addr[op.obj] = obj
            ev = self.waiting.pop(op.obj, None)
            if ev is not None:
                ev.succeed()
        else:
            obj = self.addr.pop(op.obj, None)
            self.failed.discard(op.obj)
            if obj is not None:
                yield from self.free(t, cache, obj)
                self.replayed_frees += 1

    def counts(self) -> dict[str, int]:
        p: TraceParams = self.params
        return {**super().counts(), "trace_allocs": p.trace.allocs,
                "trace_frees": p.trace.frees, "replayed_allocs": self.replayed_allocs,
                "replayed_frees": self.replayed_frees, "skipped_frees": self.skipped_frees,
                "trace_irq_events": p.trace.contexts.get("irq", 0),
                "trace_softirq_events": p.trace.contexts.get("softirq", 0),
                "trace_irqs_off_events": p.trace.contexts.get("irqs_off", 0)}
