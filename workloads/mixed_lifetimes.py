"""`mixed_lifetimes`: short- and long-lived objects in one cache — the pattern that fragments
slab allocators (a few long-lived objects pin many slabs; Bonwick 1994 section 4.4, Bonwick &
Adams 2001 on the consolidator).

Each thread first allocates `long_objects` objects, then frees a random `1 - keep_fraction`
of them in random order, keeping the rest for `long_lifetime` (default: the whole run). The
survivors are scattered over nearly every slab the fill created. Then the thread churns
short-lived objects (`live_short` alive at a time, lifetimes from `short_lifetime`) in the same
caches, which reuses the holes.

With `movable = true` the workload is a consolidation-aware client: on policies that have a
slab consolidator (illumos `kmem_cache_set_move`) it registers a move callback that answers
YES for a long-lived object (and from then on holds the new copy), NO for a short-lived object
in use, and DONT_KNOW for anything else (e.g. an object cached in a magazine).
"""

from __future__ import annotations

import heapq
from typing import Any

from pydantic import Field

from simcore.cpu import Gen, Thread
from simcore.flags import NAMES
from simcore.units import Duration
from workloads.base import Workload, WorkloadParams
from workloads.lifetimes import Lifetime


class MixedLifetimesParams(WorkloadParams):
    caches: list[str] = Field(default_factory=list, description="caches (empty = all)")
    cpus: list[int] = Field(default_factory=list, description="CPUs to run on (empty = all)")
    long_objects: int = Field(default=4096, ge=0,
                              description="objects each thread allocates in its fill phase")
    keep_fraction: float = Field(default=0.1, ge=0, le=1, description=(
        "fraction of the fill kept as long-lived objects (the rest freed in random order)"))
    long_lifetime: Duration | None = Field(default=None, gt=0, description=(
        "lifetime of the kept objects, from the end of the fill (default: the whole run)"))
    live_short: int = Field(default=32, ge=0, description="short-lived objects alive per thread")
    short_lifetime: Lifetime = Field(
        default_factory=lambda: Lifetime(dist="exponential", mean=20_000),
        description="lifetime distribution of short-lived objects")
    think: Duration = Field(default=0, ge=0, description="CPU work between two operations")
    movable: bool = Field(default=False, description=(
        "register a move callback (illumos consolidator) that relocates long-lived objects"))
    flags: str = Field(default="KM_SLEEP", pattern="^(KM_SLEEP|KM_NOSLEEP|KM_PUSHPAGE|KM_NOFS)$",
                       description="allocation flags")
    start: Duration = Field(default=0, ge=0, description="when the threads start")
    stop: Duration | None = Field(default=None, gt=0, description="when churn stops")


class MixedLifetimes(Workload):
    """Long-lived survivors of a fill, scattered over slabs, plus short-lived churn."""

    kind = "mixed_lifetimes"
    summary = "a fill of which a random few survive long (fragmentation) plus short-lived churn"
    Params = MixedLifetimesParams

    def start(self) -> None:
        p: MixedLifetimesParams = self.params
        names = p.caches or list(self.caches)
        self._caches = [self.caches[n] for n in names]
        self._flags = NAMES[p.flags]
        self.long_held: dict[int, tuple[Any, str]] = {}
        """Long-lived objects now held: address -> (cache, owning thread)."""
        self.short_held: set[int] = set()
        self.kept = 0
        """Objects kept after the fill phases (all threads)."""
        self.moved = 0
        """Objects relocated by the consolidator (YES answers)."""
        set_move = getattr(self.policy, "kmem_cache_set_move", None)
        if p.movable and set_move is not None:
            for c in self._caches:
                set_move(c, self._move)
        for cpu in p.cpus or range(self.machine.ncpus):
            self.spawn(f"{self.label}/{cpu}", self._thread, cpu=cpu)

    def _move(self, t: Thread, old: int, new: int, size: int) -> str:
        """The client's move callback: relocate a long-lived object, refuse a busy short-lived
        one, and say DONT_KNOW for objects it does not hold."""
        held = self.long_held.pop(old, None)
        if held is not None:
            self.long_held[new] = held
            self.moved += 1
            t.charge_ns(size // 8)
            return "YES"
        if old in self.short_held:
            return "NO"
        return "DONT_KNOW"

    def _thread(self, t: Thread) -> Gen:
        p: MixedLifetimesParams = self.params
        rng = self.machine.rng(t.name)
        caches = self._caches
        flags = self._flags
        if p.start:
            yield from t.sleep(p.start - t.now)
        fill: list[tuple[int, Any]] = []
        for i in range(p.long_objects):
            cache = caches[i % len(caches)]
            obj = yield from self.alloc(t, cache, flags)
            if obj is not None:
                fill.append((obj, cache))
            yield from t.checkpoint()
        order = list(range(len(fill)))
        for i in range(len(order) - 1, 0, -1):
            j = rng.integers(i + 1)
            order[i], order[j] = order[j], order[i]
        nkeep = round(len(fill) * p.keep_fraction)
        keep = set(order[:nkeep])
        for k in order[nkeep:]:
            obj, cache = fill[k]
            yield from self.free(t, cache, obj)
            yield from t.checkpoint()
        for k in sorted(keep):
            obj, cache = fill[k]
            self.long_held[obj] = (cache, t.name)
        self.kept += nkeep
        mine = nkeep > 0
        long_death = t.now + p.long_lifetime if p.long_lifetime is not None else None
        lifetime = p.short_lifetime.sampler(rng)
        stop = p.stop if p.stop is not None else 1 << 62
        live: list[tuple[int, int, int, Any]] = []
        seq = 0
        while t.now < stop:
            now = t.now
            if long_death is not None and now >= long_death and mine:
                mine = False
                yield from self._free_long(t)
                continue
            if live and live[0][0] <= now:
                _d, _s, obj, cache = heapq.heappop(live)
                self.short_held.discard(obj)
                yield from self.free(t, cache, obj)
            elif len(live) < p.live_short:
                cache = caches[seq % len(caches)]
                obj = yield from self.alloc(t, cache, flags)
                if obj is not None:
                    seq += 1
                    self.short_held.add(obj)
                    heapq.heappush(live, (t.now + lifetime(), seq, obj, cache))
            else:
                wake = live[0][0] if live else stop
                if long_death is not None and mine:
                    wake = min(wake, long_death)
                if wake >= 1 << 62:
                    return
                yield from t.sleep(max(1, min(wake, stop) - now))
                continue
            if p.think:
                t.charge_ns(p.think)
            yield from t.checkpoint()

    def _free_long(self, t: Thread) -> Gen:
        """Free this thread's long-lived objects (at their current addresses)."""
        for obj in [o for o, (_c, owner) in self.long_held.items() if owner == t.name]:
            held = self.long_held.pop(obj, None)
            if held is not None:
                yield from self.free(t, held[0], obj)
