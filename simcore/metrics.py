"""What a run records: counters, log-linear histograms, a sampled timeline and an event log.

Memory stays bounded whatever the run length: histograms have fixed buckets, the timeline halves
its resolution (keeps every other sample, doubles the interval) when it reaches `max_samples`,
and the event log keeps the first `max_events` events, then of every kind the first
`max_events // 100` it had not kept yet, and counts the rest by kind.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import simpy

SUB_BITS = 7
"""Log-linear layout (HdrHistogram's, two significant digits): values below 2^(SUB_BITS+1) = 256
have a bucket each; every later power-of-two range [2^k, 2^(k+1)) is cut into 2^SUB_BITS = 128
equal buckets of width 2^(k-7). A bucket's width is at most 1/128 of its lower bound, so any value
reported for it (its highest value) is within 0.79 % of every value it counts."""
LINEAR_LIMIT = 1 << (SUB_BITS + 1)


def bucket_index(v: int) -> int:
    """Index of the bucket counting value `v` (an int >= 0): `v` itself below 256, else
    shift * 128 + (v >> shift) with shift = bit_length - 8 (the top 8 bits select the bucket)."""
    shift = v.bit_length() - SUB_BITS - 1
    if shift <= 0:
        return v
    return (shift << SUB_BITS) + (v >> shift)


def bucket_bounds(i: int) -> tuple[int, int]:
    """Lowest and highest value counted by bucket `i` (inverse of `bucket_index`)."""
    if i < LINEAR_LIMIT:
        return i, i
    shift = (i >> SUB_BITS) - 1
    lo = (i - (shift << SUB_BITS)) << shift
    return lo, lo + (1 << shift) - 1


QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999), ("p99.99", 0.9999))
"""The quantiles every summary prints, with max."""


@dataclass
class SamplingConfig:
    """Timeline and event-log bounds."""

    interval: int = 1_000_000
    """Timeline sampling interval, ns of simulated time."""
    max_samples: int = 20_000
    max_events: int = 100_000


class LogHistogram:
    """Log-linear buckets of ns values (see `bucket_index`): at most 0.79 % relative error for
    every value from 1 ns to 2^63 ns; 4,353 buckets reach 1000 s. The bucket list grows on
    demand to the largest index seen, so a histogram of short latencies stays small. `record`
    keeps only the buckets, the total and the maximum (the hot path); count and minimum are
    read from the buckets."""

    __slots__ = ("name", "_buckets", "_total", "_max", "tally")

    def __init__(self, name: str) -> None:
        self.name = name
        self._buckets = [0] * 1024
        self._total = 0
        self._max = 0
        self.tally: defaultdict[int, int] = defaultdict(int)
        """Values counted by a hot path (`tally[ns] += 1`) and not yet recorded: folded into
        the buckets, total and maximum on any read (the same numbers as recording each)."""

    def record(self, v: int, n: int = 1) -> None:
        """Count value `v` (an int of ns, >= 0) `n` times (the same arithmetic as
        `bucket_index`, inlined)."""
        if v < 256:
            self._buckets[v] += n
        else:
            s = v.bit_length() - 8
            i = (s << 7) + (v >> s)
            try:
                self._buckets[i] += n
            except IndexError:
                self._buckets.extend([0] * (i + 1 - len(self._buckets)))
                self._buckets[i] += n
        if v > self._max:
            self._max = v
        self._total += v * n

    def fold(self) -> None:
        """Record the tallied values (the tally object stays the same: hot paths keep it)."""
        tally = self.tally
        if tally:
            for v, n in tally.items():
                self.record(v, n)
            tally.clear()

    @property
    def buckets(self) -> list[int]:
        self.fold()
        return self._buckets

    @property
    def total(self) -> int:
        self.fold()
        return self._total

    @property
    def max(self) -> int:
        self.fold()
        return self._max

    @property
    def count(self) -> int:
        return sum(self.buckets)

    @property
    def min(self) -> int:
        """The lowest value of the lowest non-empty bucket (exact below 256 ns)."""
        for i, c in enumerate(self.buckets):
            if c:
                return bucket_bounds(i)[0]
        return 0

    @property
    def mean(self) -> float:
        n = self.count
        return self.total / n if n else 0.0

    def quantile(self, q: float) -> float:
        """The highest value of the bucket holding the q-quantile (the smallest value with at
        least ceil(q * count) values at or below it), clamped to the observed max."""
        n = self.count
        if not n:
            return 0.0
        target = max(1, math.ceil(q * n - 1e-9))
        run = 0
        for i, c in enumerate(self.buckets):
            if c:
                run += c
                if run >= target:
                    return float(min(self.max, bucket_bounds(i)[1]))
        return float(self.max)

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {"count": self.count, "mean": round(self.mean, 3),
                                 "min": self.min}
        for key, q in QUANTILES:
            out[key] = self.quantile(q)
        out["max"] = self.max
        out["total"] = self.total
        return out

    def rows(self) -> list[dict[str, Any]]:
        """Non-empty buckets as rows: histogram, lowest and highest value (ns), count."""
        out = []
        for i, c in enumerate(self.buckets):
            if c:
                lo, hi = bucket_bounds(i)
                out.append({"histogram": self.name, "lo_ns": lo, "hi_ns": hi, "count": c})
        return out


class Timeline:
    """Samples registered probes every `interval` ns of simulated time."""

    def __init__(self, env: simpy.Environment, cfg: SamplingConfig,
                 fold: Callable[[], None] = lambda: None) -> None:
        self.env = env
        self._fold = fold
        """Folds counted fast-path hits into the statistics before every sample."""
        self.interval = cfg.interval
        """Current interval (doubles when the sample budget is reached)."""
        self.max_samples = cfg.max_samples
        self.rows: list[dict[str, float]] = []
        self._probes: list[tuple[str, Callable[[], dict[str, float]]]] = []
        self._started = False

    def add_probe(self, prefix: str, fn: Callable[[], dict[str, float]]) -> None:
        """Sample `fn()` each interval; its keys become columns `prefix.key`."""
        self._probes.append((prefix, fn))

    def sample(self) -> None:
        self._fold()
        row: dict[str, float] = {"time_ns": self.env.now}
        for prefix, fn in self._probes:
            for k, v in fn().items():
                row[f"{prefix}.{k}" if prefix else k] = v
        self.rows.append(row)
        if len(self.rows) >= self.max_samples:
            self.rows = self.rows[::2]
            self.interval *= 2

    def start(self) -> None:
        if self._started or not self._probes:
            return
        self._started = True
        self.env.process(self._run())

    def _run(self):  # type: ignore[no-untyped-def]
        while True:
            self.sample()
            yield self.env.timeout(self.interval)


class EventLog:
    """Rare events (growth, reaping, DEADLOCKED, emergency objects, ...) with their time.

    The first `max_events` events are kept; once the log is full, every kind still keeps its
    first `max_events // 100` further events (the reserve), so an event that comes late in a
    long run (an age-out after 20 s of growth events, a deadlock) is still in the log. The rest
    is only counted."""

    def __init__(self, env: simpy.Environment, max_events: int) -> None:
        self.env = env
        self.max_events = max_events
        self.reserve = max_events // 100
        """Events of each kind kept after the log is full."""
        self.events: list[dict[str, Any]] = []
        self.dropped: Counter[str] = Counter()
        """Events not kept, by kind."""
        self.late: Counter[str] = Counter()
        """Events kept from the reserve, by kind."""
        self.totals: Counter[str] = Counter()
        """All events seen, by kind."""

    def add(self, kind: str, time: int | None = None, **fields: Any) -> None:
        self.totals[kind] += 1
        if len(self.events) >= self.max_events:
            if self.late[kind] >= self.reserve:
                self.dropped[kind] += 1
                return
            self.late[kind] += 1
        ev = {"time_ns": self.env.now if time is None else time, "kind": kind}
        ev.update(fields)
        self.events.append(ev)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["kind"] == kind]


class Metrics:
    """Counters, histograms, timeline, event log and the registry of locks."""

    def __init__(self, env: simpy.Environment, cfg: SamplingConfig) -> None:
        self.env = env
        self.counters: Counter[str] = Counter()
        self.histograms: dict[str, LogHistogram] = {}
        self._folds: list[Callable[[], None]] = []
        self.timeline = Timeline(env, cfg, self.fold)
        self.log = EventLog(env, cfg.max_events)
        self.locks: list[Any] = []
        self.tracer: Any = None
        """The machine's TraceRecorder, or None (see simcore.trace)."""

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def add_fold(self, fn: Callable[[], None]) -> None:
        """Register a function that moves counted fast-path hits into the histograms and the
        per-CPU IRQ-off statistics (see `fold`)."""
        self._folds.append(fn)

    def fold(self) -> None:
        """Bring every statistic up to date. A fast path whose outcome has a constant cost (a
        magazine hit with no interrupt due) only counts itself; this records those counts as
        (value, count) pairs, which gives the buckets, totals and maxima recording each hit
        one by one would give. Called before every timeline sample, by the run's summary and
        by whatever reads the statistics mid-run. Locks tally their waits and holds by value
        (LockStat.fold) and are folded here too."""
        for fn in self._folds:
            fn()
        for lk in self.locks:
            st = lk.stat
            if st.waits or st.holds:
                st.fold()

    def hist(self, name: str) -> LogHistogram:
        """The histogram called `name` (created on first use)."""
        h = self.histograms.get(name)
        if h is None:
            h = self.histograms[name] = LogHistogram(name)
        return h

    def merge(self, name: str, parts: list[str]) -> LogHistogram:
        """Histogram `name` (replaced) as the sum of the histograms named in `parts`."""
        h = self.histograms[name] = LogHistogram(name)
        for p in parts:
            src = self.histograms.get(p)
            if src is None:
                continue
            sb, hb = src.buckets, h._buckets
            if len(sb) > len(hb):
                hb.extend([0] * (len(sb) - len(hb)))
            for i, c in enumerate(sb):
                if c:
                    hb[i] += c
            h._total += src.total
            h._max = max(h._max, src.max)
        return h

    def event(self, kind: str, time: int | None = None, **fields: Any) -> None:
        self.log.add(kind, time, **fields)
        if self.tracer is not None:
            self.tracer.instant(kind, self.env.now if time is None else time, fields)

    def register_lock(self, lock: Any) -> None:
        self.locks.append(lock)

    def lock_classes(self) -> dict[str, list[Any]]:
        """Locks grouped by class name, as lock_stat aggregates them."""
        out: dict[str, list[Any]] = {}
        for lk in self.locks:
            out.setdefault(lk.name, []).append(lk)
        return out
