"""`producer_consumer`: objects allocated on one set of CPUs and freed on another (xmalloc-test
style; spl-history A2), the pattern that defeats per-CPU caches: the producers' magazines or
array caches only ever empty, the consumers' only ever fill, and every object crosses CPUs
(remote / alien frees in the Linux model).

Each producer thread allocates `batch` objects, hands them to a consumer (round robin over the
consumer threads) and thinks for `think`; each consumer frees what it receives, in order, no
earlier than the moment it was handed over (plus `hold`). A producer whose consumer still has
`queue_limit` objects waiting sleeps until it drains (back pressure), so memory stays bounded.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from pydantic import Field, model_validator

from simcore.cpu import Gen, Thread
from simcore.flags import NAMES
from simcore.units import Duration
from workloads.base import Workload, WorkloadParams


class ProducerConsumerParams(WorkloadParams):
    caches: list[str] = Field(default_factory=list,
                              description="caches to allocate from, round robin (empty = all)")
    producers: list[int] = Field(default_factory=lambda: [0],
                                 description="CPUs that allocate")
    consumers: list[int] = Field(default_factory=lambda: [1], description="CPUs that free")
    batch: int = Field(default=16, gt=0, description="objects handed over at a time")
    think: Duration = Field(default=500, ge=0, description="producer work between batches")
    hold: Duration = Field(default=0, ge=0,
                           description="time an object lives after the hand-over")
    queue_limit: int = Field(default=1024, gt=0,
                             description="objects waiting at one consumer before the "
                             "producer blocks")
    flags: str = Field(default="KM_SLEEP", pattern="^(KM_SLEEP|KM_NOSLEEP|KM_PUSHPAGE|KM_NOFS)$",
                       description="allocation flags")
    start: Duration = Field(default=0, ge=0, description="when the threads start")
    stop: Duration | None = Field(default=None, gt=0, description="when producers stop")

    @model_validator(mode="after")
    def _sets(self) -> ProducerConsumerParams:
        if not self.producers or not self.consumers:
            raise ValueError("producers and consumers must not be empty")
        return self


class _Inbox:
    """One consumer's queue of (due time, cache, object, producer CPU)."""

    def __init__(self) -> None:
        self.items: deque[tuple[int, Any, int, int]] = deque()
        self.wake: Any = None
        self.drained: Any = None


class ProducerConsumer(Workload):
    """Allocate on the producer CPUs, free on the consumer CPUs."""

    kind = "producer_consumer"
    summary = "objects allocated on producer CPUs and freed on consumer CPUs (remote frees)"
    Params = ProducerConsumerParams

    def start(self) -> None:
        p: ProducerConsumerParams = self.params
        n = self.machine.ncpus
        for cpu in (*p.producers, *p.consumers):
            if cpu >= n:
                raise ValueError(f"producer_consumer: CPU {cpu} does not exist ({n} CPUs)")
        names = p.caches or list(self.caches)
        self._caches = [self.caches[x] for x in names]
        self._flags = NAMES[p.flags]
        self.cross_frees = 0
        """Frees on a CPU other than the one that allocated the object."""
        self._inboxes = [_Inbox() for _ in p.consumers]
        for i, cpu in enumerate(p.consumers):
            self.spawn(f"{self.label}/cons{cpu}", self._consumer(self._inboxes[i]),
                               cpu=cpu)
        for k, cpu in enumerate(p.producers):
            self.spawn(f"{self.label}/prod{cpu}", self._producer(k), cpu=cpu)

    def _producer(self, k: int) -> Any:
        def body(t: Thread) -> Gen:
            p: ProducerConsumerParams = self.params
            env = self.machine.env
            stop = p.stop if p.stop is not None else 1 << 62
            caches = self._caches
            flags = self._flags
            n_in = len(self._inboxes)
            turn = k % n_in
            ci = 0
            if p.start:
                yield from t.sleep(p.start - t.now)
            while t.now < stop:
                box = self._inboxes[turn]
                turn = (turn + 1) % n_in
                while len(box.items) >= p.queue_limit:
                    box.drained = env.event()
                    yield from t.block(box.drained, ("sleep", "consumer queue full"))
                batch = []
                for _ in range(p.batch):
                    cache = caches[ci]
                    ci = (ci + 1) % len(caches)
                    obj = self.try_alloc(t, cache, flags)
                    if obj is None:
                        obj = yield from self.do_alloc(t, cache, flags)
                    if obj is not None:
                        batch.append((cache, obj))
                yield from t.sync()
                due = t.now + p.hold
                cpu = t.cpu.id
                box.items.extend((due, cache, obj, cpu) for cache, obj in batch)
                if box.wake is not None and not box.wake.triggered:
                    box.wake.succeed()
                if p.think:
                    t.charge_ns(p.think)
                yield from t.checkpoint()
        return body

    def _consumer(self, box: _Inbox) -> Any:
        def body(t: Thread) -> Gen:
            env = self.machine.env
            while True:
                if not box.items:
                    if box.drained is not None and not box.drained.triggered:
                        box.drained.succeed()
                    box.wake = env.event()
                    yield from t.block(box.wake, ("sleep", "consumer idle"))
                    continue
                due, cache, obj, cpu = box.items[0]
                if due > t.now:
                    yield from t.sleep(due - t.now)
                    continue
                box.items.popleft()
                if not self.try_free(t, cache, obj):
                    yield from self.do_free(t, cache, obj)
                if cpu != t.cpu.id:
                    self.cross_frees += 1
                if box.drained is not None and not box.drained.triggered \
                        and len(box.items) < self.params.queue_limit // 2:
                    box.drained.succeed()
                yield from t.checkpoint()
        return body

    def counts(self) -> dict[str, int]:
        return {**super().counts(), "cross_cpu_frees": self.cross_frees}
