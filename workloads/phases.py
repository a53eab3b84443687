"""`phases`: a sequence of load phases (steady, ramp, burst, idle, memory pressure) with their
own populations, lifetimes and durations, so working-set growth, reaping and memory return
after a burst can be watched on one timeline.

Each CPU runs one thread (as in `steady`): it frees the object whose lifetime has ended first,
allocates while below the current phase's target, otherwise sleeps until the next death or the
next phase boundary. Phase kinds:

- `steady` / `burst`: hold `live_objects` per thread (a burst is a steady phase with a large
  population and usually no think time);
- `ramp`: the target moves linearly from the previous phase's target to `live_objects`;
- `idle`: no allocations; live objects are freed as their lifetimes end;
- `pressure`: as steady, and the page allocator's budget shrinks by `reserve` (a fraction of
  memory) for the phase, which drives reclaim and the policies' shrinkers.

Every boundary is logged as a `phase` event (with the phase's name) at its configured time.
"""

from __future__ import annotations

import heapq
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from simcore.cpu import Gen, Thread
from simcore.flags import NAMES
from simcore.units import Duration
from workloads.base import Workload, WorkloadParams
from workloads.lifetimes import Lifetime


class Phase(BaseModel):
    """One phase of a `phases` workload."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(default="", description="label for events and plots (default: kind)")
    kind: Literal["steady", "burst", "ramp", "idle", "pressure"] = "steady"
    duration: Duration = Field(gt=0, description="how long the phase lasts")
    live_objects: int = Field(default=64, ge=0, description="target live objects per thread")
    lifetime: Lifetime = Field(default_factory=lambda: Lifetime(dist="exponential", mean=50_000))
    think: Duration = Field(default=0, ge=0, description="CPU work between two operations")
    reserve: float = Field(default=0.5, ge=0, lt=1,
                           description="pressure: fraction of memory taken away")


class PhasesParams(WorkloadParams):
    caches: list[str] = Field(default_factory=list, description="caches (empty = all)")
    cpus: list[int] = Field(default_factory=list, description="CPUs to run on (empty = all)")
    flags: str = Field(default="KM_SLEEP", pattern="^(KM_SLEEP|KM_NOSLEEP|KM_PUSHPAGE|KM_NOFS)$",
                       description="allocation flags")
    start: Duration = Field(default=0, ge=0, description="when the first phase begins")
    phases: list[Phase] = Field(min_length=1, description=(
        "the phases in order, e.g. [{kind='steady', duration='20ms', live_objects=64}, "
        "{kind='burst', duration='5ms', live_objects=2000, think=0}, "
        "{kind='idle', duration='30ms'}]"))


class Phases(Workload):
    """A sequence of load phases per CPU."""

    kind = "phases"
    summary = "phases of steady / ramp / burst / idle / memory-pressure load with boundaries"
    Params = PhasesParams

    def start(self) -> None:
        p: PhasesParams = self.params
        names = p.caches or list(self.caches)
        self._caches = [self.caches[n] for n in names]
        self._flags = NAMES[p.flags]
        self.bounds: list[tuple[int, int, Phase]] = []
        """(start, end, phase) in simulated ns."""
        t0 = p.start
        for ph in p.phases:
            self.bounds.append((t0, t0 + ph.duration, ph))
            t0 += ph.duration
        self.phase_allocs = [0] * len(p.phases)
        """Allocations started in each phase (all threads)."""
        m = self.machine
        for i, (s, _e, ph) in enumerate(self.bounds):
            m.env.timeout(s).callbacks.append(lambda _ev, i=i, ph=ph: self._enter(i, ph))
        end = self.bounds[-1][1]
        m.env.timeout(end).callbacks.append(lambda _ev: self._enter(len(self.bounds), None))
        for cpu in p.cpus or range(m.ncpus):
            self.spawn(f"{self.label}/{cpu}", self._thread, cpu=cpu)

    def _enter(self, i: int, ph: Phase | None) -> None:
        """Phase `i` begins (None: the sequence ends): log it, end or start a pressure
        reservation."""
        m = self.machine
        m.metrics.event("phase", name=ph.name or ph.kind if ph else "end", index=i,
                        workload=self.label)
        if i and self.bounds[i - 1][2].kind == "pressure":
            m.memory.unreserve(self._reserved)
        if ph is not None and ph.kind == "pressure":
            self._reserved = m.memory.reserve(int(m.memory.total_pages * ph.reserve))

    def target(self, i: int, now: int) -> int:
        """The live-object target of phase `i` at time `now`."""
        s, e, ph = self.bounds[i]
        if ph.kind == "idle":
            return 0
        if ph.kind == "ramp":
            prev = self.bounds[i - 1][2].live_objects if i else 0
            return int(prev + (ph.live_objects - prev) * (now - s) / (e - s))
        return ph.live_objects

    def _thread(self, t: Thread) -> Gen:
        p: PhasesParams = self.params
        rng = self.machine.rng(t.name)
        caches = self._caches
        flags = self._flags
        samplers = [ph.lifetime.sampler(rng) for _s, _e, ph in self.bounds]
        live: list[tuple[int, int, int, Any]] = []
        seq = 0
        end = self.bounds[-1][1]
        i = 0
        if p.start:
            yield from t.sleep(p.start - t.now)
        while True:
            now = t.now
            while i < len(self.bounds) and now >= self.bounds[i][1]:
                i += 1
            if i == len(self.bounds):
                if not live:
                    return
                if live[0][0] > now:
                    yield from t.sleep(live[0][0] - now)
                    continue
                _d, _s, obj, cache = heapq.heappop(live)
                yield from self.free(t, cache, obj)
                continue
            ph = self.bounds[i][2]
            if live and live[0][0] <= now:
                _d, _s, obj, cache = heapq.heappop(live)
                yield from self.free(t, cache, obj)
            elif len(live) < self.target(i, now):
                cache = caches[seq % len(caches)]
                self.phase_allocs[i] += 1
                obj = yield from self.alloc(t, cache, flags)
                if obj is not None:
                    seq += 1
                    heapq.heappush(live, (t.now + samplers[i](), seq, obj, cache))
            else:
                wake = min(live[0][0] if live else end, self.bounds[i][1])
                if ph.kind == "ramp":
                    wake = min(wake, now + max(1, (self.bounds[i][1] - self.bounds[i][0]) // 100))
                yield from t.sleep(max(wake - now, 1))
                continue
            if ph.think:
                t.charge_ns(ph.think)
            yield from t.checkpoint()
