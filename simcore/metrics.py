"""What a run records: counters, log-bucket histograms, a sampled timeline and an event log.

Memory stays bounded whatever the run length: histograms have fixed buckets, the timeline halves
its resolution (keeps every other sample, doubles the interval) when it reaches `max_samples`,
and the event log keeps the first `max_events` events and counts the rest by kind.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import simpy

NBUCKETS = 65
"""Buckets 0..64: value 0, then [2^(i-1), 2^i) up to 2^63."""


@dataclass
class SamplingConfig:
    """Timeline and event-log bounds."""

    interval: int = 1_000_000
    """Timeline sampling interval, ns of simulated time."""
    max_samples: int = 20_000
    max_events: int = 100_000


class LogHistogram:
    """Power-of-two buckets of ns values: bucket i holds values v with v.bit_length() == i,
    i.e. [2^(i-1), 2^i)."""

    __slots__ = ("name", "buckets", "count", "total", "min", "max")

    def __init__(self, name: str) -> None:
        self.name = name
        self.buckets = [0] * NBUCKETS
        self.count = 0
        self.total = 0
        self.min = 0
        self.max = 0

    def record(self, v: int) -> None:
        """Count one value (an int of ns, >= 0)."""
        self.buckets[v.bit_length()] += 1
        if v > self.max:
            self.max = v
        if v < self.min or not self.count:
            self.min = v
        self.count += 1
        self.total += v

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding the q-quantile (clamped to the observed max)."""
        if not self.count:
            return 0.0
        target = q * self.count
        run = 0
        for i, c in enumerate(self.buckets):
            run += c
            if run >= target and c:
                return float(min(self.max, (1 << i) - 1 if i else 0))
        return float(self.max)

    def summary(self) -> dict[str, float]:
        return {"count": self.count, "mean": round(self.mean, 3), "min": self.min,
                "p50": self.quantile(0.5), "p99": self.quantile(0.99), "max": self.max,
                "total": self.total}

    def rows(self) -> list[dict[str, Any]]:
        """Non-empty buckets as rows: histogram, lower and upper bound (ns), count."""
        return [{"histogram": self.name, "lo_ns": (1 << (i - 1)) if i else 0,
                 "hi_ns": (1 << i) - 1 if i else 0, "count": c}
                for i, c in enumerate(self.buckets) if c]


class Timeline:
    """Samples registered probes every `interval` ns of simulated time."""

    def __init__(self, env: simpy.Environment, cfg: SamplingConfig) -> None:
        self.env = env
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
    """Rare events (growth, reaping, DEADLOCKED, emergency objects, ...) with their time."""

    def __init__(self, env: simpy.Environment, max_events: int) -> None:
        self.env = env
        self.max_events = max_events
        self.events: list[dict[str, Any]] = []
        self.dropped: Counter[str] = Counter()
        """Events not kept once the log was full, by kind."""
        self.totals: Counter[str] = Counter()
        """All events seen, by kind."""

    def add(self, kind: str, time: int | None = None, **fields: Any) -> None:
        self.totals[kind] += 1
        if len(self.events) >= self.max_events:
            self.dropped[kind] += 1
            return
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
        self.timeline = Timeline(env, cfg)
        self.log = EventLog(env, cfg.max_events)
        self.locks: list[Any] = []

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def hist(self, name: str) -> LogHistogram:
        """The histogram called `name` (created on first use)."""
        h = self.histograms.get(name)
        if h is None:
            h = self.histograms[name] = LogHistogram(name)
        return h

    def event(self, kind: str, time: int | None = None, **fields: Any) -> None:
        self.log.add(kind, time, **fields)

    def register_lock(self, lock: Any) -> None:
        self.locks.append(lock)

    def lock_classes(self) -> dict[str, list[Any]]:
        """Locks grouped by class name, as lock_stat aggregates them."""
        out: dict[str, list[Any]] = {}
        for lk in self.locks:
            out.setdefault(lk.name, []).append(lk)
        return out
