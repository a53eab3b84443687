"""The workload contract: generators of allocator calls running as simulated threads.

A workload receives the machine, the policy and the experiment's caches, and in `start()` spawns
the threads that call `policy.alloc` / `policy.free`. Its parameters are a pydantic model
(`Params`, extra keys forbidden) so experiment files are validated before anything runs.
Every operation goes through `Workload.try_alloc` / `try_free` (the policy's plain-function fast
path) and, when that declines, `do_alloc` / `do_free` (the generator path); both count the
operation and tally its latency by value, recorded into the per-workload, per-cache histograms
(`workload.<label>.<cache>.alloc` / `.free`) by `fold_latency`, so every workload's figures
compare. `alloc` / `free` combine the two for code that
does not need the last bit of speed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Generator
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from policies.base import CacheSpec, Policy
from simcore.flags import KM_SLEEP
from simcore.machine import Machine
from simcore.metrics import LogHistogram
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
        self.cache_failures: dict[str, int] = {}
        """Failed allocations by cache name."""
        self._lat: dict[int, tuple[LogHistogram, LogHistogram]] = {}
        self._lat_names: dict[int, str] = {}
        """Per cache (by id: caches live as long as the run) the alloc and free latency
        histograms of this workload on it (`workload.<label>.<cache>.alloc` / `.free`;
        `latency.alloc` / `latency.free` are their sums, built when the run is summarised)."""
        self._tally_alloc: dict[Any, defaultdict[int, int]] = {}
        self._tally_free: dict[Any, defaultdict[int, int]] = {}
        """Per cache object, the fast paths' latencies not yet recorded: ns -> count (a fast
        path's cost takes a handful of values, so counting them is cheaper than recording
        each; `fold_latency` records them). A cache object that cannot be hashed takes the
        slower `_tallies` lookup by id every time."""
        self._tallies_by_id: dict[int, tuple[defaultdict[int, int], defaultdict[int, int]]] = {}
        machine.metrics.add_fold(self.fold_latency)
        fast = machine.fast_paths
        self._alloc_fast = policy.alloc_fast if fast else _no_fast_alloc
        self._free_fast = policy.free_fast if fast else _no_fast_free
        cls = type(policy)
        self.no_fast_paths = not fast or (cls.alloc_fast is Policy.alloc_fast
                                          and cls.free_fast is Policy.free_fast)
        """Every operation takes the generator path: the policy has no fast path (its
        `alloc_fast` / `free_fast` are the base class's, which always decline) or the run
        turned them off. A loop may then call `do_alloc` / `do_free` (or their work) directly
        instead of asking a fast path that would decline."""

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

    def ensure_cache(self, name: str, size: int, align: int = 8,
                     flags: tuple[str, ...] = ()) -> Any:
        """kmem_cache_create of `name` unless the experiment already has a cache by that name;
        the cache either way."""
        if name not in self.caches:
            self.caches[name] = self.policy.cache_create(CacheSpec(name, size, align,
                                                                   flags=flags))
        return self.caches[name]

    @property
    def label(self) -> str:
        return f"{self.kind}{self.index}"

    def cache(self, name: str) -> Any:
        return self.caches[name]

    def _latency(self, cache: Any) -> tuple[LogHistogram, LogHistogram]:
        """This workload's (alloc, free) latency histograms on `cache` (made on first use)."""
        pair = self._lat.get(id(cache))
        if pair is None:
            m = self.machine.metrics
            name = self.policy.cache_name(cache)
            self._lat_names[id(cache)] = name
            prefix = f"workload.{self.label}.{name}"
            pair = self._lat[id(cache)] = (m.hist(prefix + ".alloc"), m.hist(prefix + ".free"))
        return pair

    def _tallies(self, cache: Any) -> tuple[defaultdict[int, int], defaultdict[int, int]]:
        """This workload's (alloc, free) fast-path latency tallies on `cache`."""
        pair = self._tallies_by_id.get(id(cache))
        if pair is None:
            self._latency(cache)
            pair = self._tallies_by_id[id(cache)] = (defaultdict(int), defaultdict(int))
            try:
                self._tally_alloc[cache], self._tally_free[cache] = pair
            except TypeError:
                pass
        return pair

    def count_hits(self, cache: Any, hit_ns: tuple[int, int], allocs: int, frees: int) -> None:
        """Count `allocs` / `frees` fast-path hits on `cache` made by a loop that kept them
        in local counters (the policy's `fast_hit_ns` says what each cost)."""
        ta, tf = self._tallies(cache)
        ta[hit_ns[0]] += allocs
        tf[hit_ns[1]] += frees
        self.allocs += allocs
        self.frees += frees

    def fold_latency(self) -> None:
        """Record the tallied fast-path latencies into the per-cache histograms
        (Metrics.fold): the same buckets, total and maximum as recording each."""
        for key, (ta, tf) in self._tallies_by_id.items():
            ha, hf = self._lat[key]
            for tally, h in ((ta, ha), (tf, hf)):
                for v, n in tally.items():
                    h.record(v, n)
                tally.clear()

    def start(self) -> None:
        raise NotImplementedError

    def try_alloc(self, t: Any, cache: Any, flags: int = KM_SLEEP) -> int | None:
        """The policy's fast path as a plain call: the object, counted and timed, or None when
        the caller must `yield from do_alloc(...)` (nothing was done)."""
        start = t.pending
        obj = self._alloc_fast(t, cache, flags)
        if obj is not None:
            try:
                tally = self._tally_alloc[cache]
            except (KeyError, TypeError):
                tally = self._tallies(cache)[0]
            tally[t.pending - start] += 1
            self.allocs += 1
        return obj

    def try_free(self, t: Any, cache: Any, obj: int) -> bool:
        """The policy's fast free path as a plain call; False when the caller must
        `yield from do_free(...)` (nothing was done)."""
        start = t.pending
        if self._free_fast(t, cache, obj):
            try:
                tally = self._tally_free[cache]
            except (KeyError, TypeError):
                tally = self._tallies(cache)[1]
            tally[t.pending - start] += 1
            self.frees += 1
            return True
        return False

    def do_alloc(self, t: Any, cache: Any, flags: int = KM_SLEEP) -> Gen:
        """Allocate one object, counting it and tallying its latency (recorded by
        `fold_latency`, as the fast paths' are); returns obj or None."""
        start = t.env._now + t.pending
        t.stalled_since = start
        obj = yield from self.policy.alloc(t, cache, flags)
        t.stalled_since = None
        try:
            tally = self._tally_alloc[cache]
        except (KeyError, TypeError):
            tally = self._tallies(cache)[0]
        tally[t.env._now + t.pending - start] += 1
        if obj is None:
            self.count_failure(cache)
        else:
            self.allocs += 1
        return obj

    def count_failure(self, cache: Any) -> None:
        """Count an allocation on `cache` that returned no object."""
        self.failures += 1
        name = self.policy.cache_name(cache)
        self.cache_failures[name] = self.cache_failures.get(name, 0) + 1
        self.machine.metrics.count("alloc.fail")

    def do_free(self, t: Any, cache: Any, obj: int) -> Gen:
        """Free one object, counting it and tallying its latency."""
        start = t.env._now + t.pending
        t.stalled_since = start
        yield from self.policy.free(t, cache, obj)
        t.stalled_since = None
        try:
            tally = self._tally_free[cache]
        except (KeyError, TypeError):
            tally = self._tallies(cache)[1]
        tally[t.env._now + t.pending - start] += 1
        self.frees += 1

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
        """Operation counts, and the longest allocator call still in progress at the end
        (ns; a thread stuck in the allocator is not in the latency histograms)."""
        now = self.machine.env.now
        prefix = f"{self.label}/"
        stuck = [now - t.stalled_since for t in self.machine.threads
                 if t.stalled_since is not None and t.name.startswith(prefix)]
        return {"allocs": self.allocs, "frees": self.frees, "alloc_failures": self.failures,
                "in_flight_max_ns": max(stuck, default=0)}

    def cache_totals(self, cache: Any) -> tuple[int, int, int]:
        """(allocs, frees, failed allocs) this workload made on `cache`."""
        self.fold_latency()
        hists = self._lat.get(id(cache))
        if hists is None:
            return 0, 0, 0
        fails = self.cache_failures.get(self._lat_names[id(cache)], 0)
        return hists[0].count - fails, hists[1].count, fails

    def cache_counts(self) -> dict[str, dict[str, Any]]:
        """Per cache this workload used: allocs, frees, failures and the latency summaries
        (a failed allocation's latency is recorded with the successful ones)."""
        self.fold_latency()
        out = {}
        for key, (ha, hf) in self._lat.items():
            name = self._lat_names[key]
            fails = self.cache_failures.get(name, 0)
            out[name] = {"allocs": ha.count - fails, "frees": hf.count, "alloc_failures": fails,
                         "alloc": ha.summary(), "free": hf.summary()}
        return dict(sorted(out.items()))
