"""`pressure`: memory-pressure episodes. During each episode other kernel users take a share of
the page budget (the allocator sees free memory fall, direct reclaim and kswapd run) and a
reaper thread calls the policy's reap entry point on every cache every `reap_interval`, as the
ZFS ARC reap thread calls spl_kmem_cache_reap_now (arc_kmem_reap_soon) when memory is short.
At the end of the episode the pages are given back.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from simcore.cpu import Gen, Thread
from simcore.units import Duration
from workloads.base import Workload, WorkloadParams


class PressureParams(WorkloadParams):
    start: Duration = Field(default=0, ge=0, description="start of the first episode")
    duration: Duration = Field(default=10_000_000, gt=0, description="length of an episode")
    period: Duration | None = Field(default=None, gt=0,
                                    description="time between episode starts (none: one episode)")
    take: float = Field(default=0.5, ge=0, le=1, description=(
        "share of the free pages other users take at episode start (0: reaps only, as an "
        "ARC eviction pass calling kmem_cache_reap_now without a page shortage)"))
    reap_interval: Duration = Field(default=1_000_000, gt=0,
                                    description="time between two reaps of every cache")
    caches: list[str] = Field(default_factory=list, description="caches to reap (empty = all)")
    cpus: list[int] = Field(default_factory=lambda: [0],
                            description="CPUs with a reaper thread (each reaps every cache)")

    @model_validator(mode="after")
    def _period(self) -> PressureParams:
        if self.period is not None and self.period < self.duration:
            raise ValueError("period must be at least the episode duration")
        return self


class Pressure(Workload):
    """Memory-pressure episodes with periodic reaping of every cache."""

    kind = "pressure"
    summary = "memory-pressure episodes: pages taken away and caches reaped (ARC reap thread)"
    Params = PressureParams

    def start(self) -> None:
        p: PressureParams = self.params
        n = self.machine.ncpus
        for cpu in p.cpus:
            if cpu >= n:
                raise ValueError(f"pressure: CPU {cpu} does not exist ({n} CPUs)")
        names = p.caches or list(self.caches)
        self._caches = [self.caches[x] for x in names]
        self.episodes = 0
        self.reaps = 0
        self._active = False
        self.machine.env.process(self._episodes())
        for cpu in p.cpus:
            self.spawn(f"{self.label}/reap{cpu}", self._reaper, cpu=cpu)

    def _episodes(self) -> Gen:
        p: PressureParams = self.params
        env = self.machine.env
        mem = self.machine.memory
        begin = p.start
        while True:
            if begin > env.now:
                yield env.timeout(begin - env.now)
            taken = mem.reserve(int(mem.free * p.take))
            self._active = True
            self.episodes += 1
            self.machine.metrics.event("pressure_start", pages=taken, free=mem.free)
            if mem.free < mem.low_pages:
                mem.wake_kswapd()
            yield env.timeout(p.duration)
            mem.unreserve(taken)
            self._active = False
            self.machine.metrics.event("pressure_end", pages=taken, free=mem.free)
            if p.period is None:
                return
            begin += p.period

    def _reaper(self, t: Thread) -> Gen:
        p: PressureParams = self.params
        policy = self.policy
        if p.start:
            yield from t.sleep(p.start - t.now)
        while True:
            if self._active:
                for cache in self._caches:
                    yield from policy.reap(t, cache)
                    self.reaps += 1
            yield from t.sleep(p.reap_interval)

    def counts(self) -> dict[str, int]:
        return {**super().counts(), "episodes": self.episodes, "reaps": self.reaps}
