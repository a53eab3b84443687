"""`larson`: Larson & Krishnan's server benchmark ("bleeding"): every thread owns an array of
`slots` objects; each round it picks a random slot, frees the object there and allocates a new
one in its place. Every `rounds` operations a thread hands its whole array to the next thread
(on the next CPU of the ring) and takes over the array handed to it, so most frees are of
objects another CPU allocated. Object sizes are drawn uniformly from `caches`.

The fraction of cross-CPU frees grows with how often arrays move: with `rounds` operations per
hand-over and `slots` objects per array, roughly min(1, rounds / slots) of a round's frees hit
objects allocated before the last hand-over, i.e. on another CPU.
"""

from __future__ import annotations

from typing import Any

import simpy
from pydantic import Field

from simcore.cpu import Gen, Thread
from simcore.flags import NAMES
from simcore.units import Duration
from workloads.base import Workload, WorkloadParams


class LarsonParams(WorkloadParams):
    caches: list[str] = Field(default_factory=list, description="caches (empty = all)")
    cpus: list[int] = Field(default_factory=list, description="CPUs in the ring (empty = all)")
    slots: int = Field(default=256, gt=0, description="objects in each thread's array")
    rounds: int = Field(default=1024, gt=0,
                        description="free+alloc operations between two hand-overs")
    think: Duration = Field(default=100, ge=0, description="CPU work between two operations")
    flags: str = Field(default="KM_SLEEP", pattern="^(KM_SLEEP|KM_NOSLEEP|KM_PUSHPAGE|KM_NOFS)$",
                       description="allocation flags")
    start: Duration = Field(default=0, ge=0, description="when the threads start")
    stop: Duration | None = Field(default=None, gt=0, description="when the threads stop")


class Larson(Workload):
    """Random replace in per-thread arrays that are handed round a ring of CPUs."""

    kind = "larson"
    summary = "Larson-style bleeding: threads replace random objects and pass arrays round a ring"
    Params = LarsonParams

    def start(self) -> None:
        p: LarsonParams = self.params
        names = p.caches or list(self.caches)
        self._caches = [self.caches[n] for n in names]
        self._flags = NAMES[p.flags]
        self.ring = list(p.cpus or range(self.machine.ncpus))
        self.inbox: dict[int, list[list[Any]]] = {cpu: [] for cpu in self.ring}
        """Arrays handed to each CPU's thread, oldest first."""
        self.waiting: dict[int, simpy.Event] = {}
        self.cross_cpu_frees = 0
        """Frees of an object allocated on another CPU."""
        self.handovers = 0
        for cpu in self.ring:
            self.spawn(f"{self.label}/{cpu}", self._thread, cpu=cpu)

    def _thread(self, t: Thread) -> Gen:
        p: LarsonParams = self.params
        rng = self.machine.rng(t.name)
        caches, flags = self._caches, self._flags
        me = t.cpu.id
        nxt = self.ring[(self.ring.index(me) + 1) % len(self.ring)]
        stop = p.stop if p.stop is not None else 1 << 62
        if p.start:
            yield from t.sleep(p.start - t.now)
        slots: list[Any] = []
        for _ in range(p.slots):
            cache = caches[rng.integers(len(caches))]
            obj = yield from self.alloc(t, cache, flags)
            slots.append((obj, cache, me))
            yield from t.checkpoint()
        while t.now < stop:
            for _ in range(p.rounds):
                k = rng.integers(p.slots)
                obj, cache, owner = slots[k]
                if obj is not None:
                    if owner != me:
                        self.cross_cpu_frees += 1
                    yield from self.free(t, cache, obj)
                cache = caches[rng.integers(len(caches))]
                obj = yield from self.alloc(t, cache, flags)
                slots[k] = (obj, cache, me)
                if p.think:
                    t.charge_ns(p.think)
                yield from t.checkpoint()
                if t.now >= stop:
                    break
            if len(self.ring) > 1 and t.now < stop:
                slots = yield from self._hand_over(t, nxt, slots)

    def _hand_over(self, t: Thread, nxt: int, slots: list[Any]) -> Gen:
        """Leave `slots` for the next CPU's thread and take the array left for this one
        (waiting for it if the previous thread has not handed over yet)."""
        yield from t.sync()
        self.handovers += 1
        self.inbox[nxt].append(slots)
        waiter = self.waiting.pop(nxt, None)
        if waiter is not None:
            waiter.succeed()
        me = t.cpu.id
        while not self.inbox[me]:
            ev = self.machine.env.event()
            self.waiting[me] = ev
            yield from t.block(ev, ("larson_handover", me))
        return self.inbox[me].pop(0)

    def counts(self) -> dict[str, int]:
        return {**super().counts(), "cross_cpu_frees": self.cross_cpu_frees,
                "handovers": self.handovers}
