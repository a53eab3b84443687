"""The workload contract: generators of allocator calls running as simulated threads.

A workload receives the machine, the policy and the experiment's caches, and in `start()` spawns
the threads that call `policy.alloc` / `policy.free`. Its parameters are a pydantic model
(`Params`, extra keys forbidden) so experiment files are validated before anything runs.
Every operation goes through `Workload.try_alloc` / `try_free` (the policy's plain-function fast
path) and, when that declines, `do_alloc` / `do_free` (the generator path); both count the
operation and record its latency, so every workload's figures compare. `alloc` / `free` combine
the two for code that does not need the last bit of speed.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from policies.base import CacheSpec
from simcore.flags import KM_SLEEP
from simcore.machine import Machine
from simcore.sched import Priority

Gen = Generator[Any, Any, Any]


def _no_fast_alloc(_t: Any, _cache: Any, _flags: int) -> None:
    return None


def _no_fast_free(_t: Any, _cache: Any, _obj: int) -> bool:
    return False


class WorkloadParams(BaseModel):
    """Base of every workload's parameter model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", strict=True)
    nice: int = Field(default=0, ge=-20, le=19,
                      description="nice value of the workload's threads (CFS weight)")


class Workload:
    """Base class of workload generators. Subclasses define `kind`, `Params` and `start`."""

    kind: ClassVar[str] = ""
    """Registry name used as `kind = "..."` in `[[workloads]]`."""
    summary: ClassVar[str] = ""
    """One line for `kmemsim workloads`."""
    Params: ClassVar[type[WorkloadParams]] = WorkloadParams

    def __init__(self, machine: Machine, policy: Any, caches: dict[str, Any], params: Any,
                 index: int = 0) -> None:
        self.machine = machine
        self.policy = policy
        self.caches = caches
        """The experiment's caches by name (policy cache objects)."""
        self.params = params
        self.index = index
        """Position in the experiment's `[[workloads]]` list (names threads and RNG streams)."""
        self.allocs = 0
        self.frees = 0
        self.failures = 0
        self.per_cache: dict[int, list[int]] = {}
        """id(cache) -> [allocs, frees, failed allocs] of this workload (see `cache_counts`)."""
        m = machine.metrics
        self._h_alloc = m.hist("latency.alloc")
        self._h_free = m.hist("latency.free")
        fast = machine.fast_paths
        self._alloc_fast = policy.alloc_fast if fast else _no_fast_alloc
        self._free_fast = policy.free_fast if fast else _no_fast_free

    def spawn(self, name: str, body: Any, cpu: int | None = None) -> Any:
        """Start one of the workload's threads at the workload's `nice` (SCHED_NORMAL)."""
        return self.machine.spawn(name, body, cpu=cpu, pri=Priority(nice=self.params.nice))

    @classmethod
    def creates(cls, params: Any) -> list[str]:
        """Names of the caches this workload creates itself at start (none by default)."""
        return []

    def create_caches(self) -> None:
        """Create the caches named by `creates` (called for every workload before any
        workload starts), each with `ensure_cache`."""

    def ensure_cache(self, name: str, size: int) -> Any:
        """kmem_cache_create of `name` unless the experiment already has a cache by that name;
        the cache either way."""
        if name not in self.caches:
            self.caches[name] = self.policy.cache_create(CacheSpec(name, size))
        return self.caches[name]

    @property
    def label(self) -> str:
        return f"{self.kind}{self.index}"

    def cache(self, name: str) -> Any:
        return self.caches[name]

    def start(self) -> None:
        raise NotImplementedError

    def try_alloc(self, t: Any, cache: Any, flags: int = KM_SLEEP) -> int | None:
        """The policy's fast path as a plain call: the object, counted and timed, or None when
        the caller must `yield from do_alloc(...)` (nothing was done)."""
        start = t.pending
        obj = self._alloc_fast(t, cache, flags)
        if obj is not None:
            self._h_alloc.record(t.pending - start)
            self.allocs += 1
            try:
                self.per_cache[id(cache)][0] += 1
            except KeyError:
                self.per_cache[id(cache)] = [1, 0, 0]
        return obj

    def try_free(self, t: Any, cache: Any, obj: int) -> bool:
        """The policy's fast free path as a plain call; False when the caller must
        `yield from do_free(...)` (nothing was done)."""
        start = t.pending
        if self._free_fast(t, cache, obj):
            self._h_free.record(t.pending - start)
            self.frees += 1
            try:
                self.per_cache[id(cache)][1] += 1
            except KeyError:
                self.per_cache[id(cache)] = [0, 1, 0]
            return True
        return False

    def do_alloc(self, t: Any, cache: Any, flags: int = KM_SLEEP) -> Gen:
        """Allocate one object, counting it and recording its latency; returns obj or None."""
        start = t.now
        t.stalled_since = start
        obj = yield from self.policy.alloc(t, cache, flags)
        t.stalled_since = None
        self._h_alloc.record(t.now - start)
        counts = self.per_cache.setdefault(id(cache), [0, 0, 0])
        if obj is None:
            self.failures += 1
            counts[2] += 1
            self.machine.metrics.count("alloc.fail")
        else:
            self.allocs += 1
            counts[0] += 1
        return obj

    def do_free(self, t: Any, cache: Any, obj: int) -> Gen:
        """Free one object, counting it and recording its latency."""
        start = t.now
        t.stalled_since = start
        yield from self.policy.free(t, cache, obj)
        t.stalled_since = None
        self._h_free.record(t.now - start)
        self.frees += 1
        self.per_cache.setdefault(id(cache), [0, 0, 0])[1] += 1

    def alloc(self, t: Any, cache: Any, flags: int = KM_SLEEP) -> Gen:
        """Allocate through the fast path if possible, else the generator path."""
        obj = self.try_alloc(t, cache, flags)
        if obj is None:
            obj = yield from self.do_alloc(t, cache, flags)
        return obj

    def free(self, t: Any, cache: Any, obj: int) -> Gen:
        """Free through the fast path if possible, else the generator path."""
        if not self.try_free(t, cache, obj):
            yield from self.do_free(t, cache, obj)

    def counts(self) -> dict[str, int]:
        return {"allocs": self.allocs, "frees": self.frees, "alloc_failures": self.failures}

    def cache_counts(self, cache: Any) -> tuple[int, int, int]:
        """(allocs, frees, failed allocs) this workload made on `cache`."""
        a, f, x = self.per_cache.get(id(cache), (0, 0, 0))
        return a, f, x
