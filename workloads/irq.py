"""`irq`: interrupt sources whose handlers allocate and free objects (network receive style,
spl-history B2 zfs#10646 / zfs#13317), alongside whatever process-context load the experiment
runs.

Each selected CPU gets an interrupt source with inter-arrival times drawn from `interval`. The
handler runs on that CPU in the context of the interrupted thread (or of the idle context),
with IRQs off: it allocates `objects` objects with `flags` (KM_NOSLEEP by default, as an
interrupt handler must) and frees the objects its previous interrupt on that CPU allocated, so
each CPU holds one batch between interrupts.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from simcore.cpu import Gen, Thread
from simcore.flags import NAMES
from simcore.units import Duration
from workloads.base import Workload, WorkloadParams
from workloads.lifetimes import Lifetime


class IrqParams(WorkloadParams):
    caches: list[str] = Field(default_factory=list,
                              description="caches the handlers allocate from, round robin "
                              "(empty = all)")
    cpus: list[int] = Field(default_factory=list, description="CPUs with a source (empty = all)")
    interval: Lifetime = Field(default_factory=lambda: Lifetime(dist="exponential", mean=100_000),
                               description="time between two interrupts on one CPU")
    objects: int = Field(default=2, ge=0, description="objects a handler allocates")
    handler_cost: Duration = Field(default=1_000, ge=0,
                                   description="handler work besides the allocations")
    flags: str = Field(default="KM_NOSLEEP", pattern="^(KM_SLEEP|KM_NOSLEEP|KM_PUSHPAGE)$",
                       description="allocation flags in the handler")
    start: Duration = Field(default=0, ge=0, description="first interrupt no earlier than this")
    stop: Duration | None = Field(default=None, gt=0, description="no interrupts after this")


class IrqAlloc(Workload):
    """Per-CPU interrupt sources whose handlers allocate and free."""

    kind = "irq"
    summary = "interrupt handlers allocating and freeing with KM_NOSLEEP (network receive style)"
    Params = IrqParams

    def start(self) -> None:
        p: IrqParams = self.params
        n = self.machine.ncpus
        cpus = p.cpus or list(range(n))
        for cpu in cpus:
            if cpu >= n:
                raise ValueError(f"irq: CPU {cpu} does not exist ({n} CPUs)")
        names = p.caches or list(self.caches)
        self._caches = [self.caches[x] for x in names]
        self._flags = NAMES[p.flags]
        self.raised = 0
        """Interrupts raised by this workload."""
        self.handled = 0
        self._held: dict[int, list[tuple[Any, int]]] = {cpu: [] for cpu in cpus}
        self._next_cache = 0
        for cpu in cpus:
            self.machine.env.process(self._source(cpu))

    def _source(self, cpu: int) -> Gen:
        p: IrqParams = self.params
        env = self.machine.env
        draw = p.interval.sampler(self.machine.rng(f"{self.label}/irq{cpu}"))
        stop = p.stop if p.stop is not None else 1 << 62
        at = p.start + draw()
        while at < stop:
            if at > env.now:
                yield env.timeout(at - env.now)
            self.machine.raise_irq(cpu, self._handler, self.label)
            self.raised += 1
            at += max(1, draw())

    def _handler(self, t: Thread) -> Gen:
        p: IrqParams = self.params
        if p.handler_cost:
            t.charge_ns(p.handler_cost)
        held = self._held.setdefault(t.cpu.id, [])
        old, held[:] = list(held), []
        for cache, obj in old:
            yield from self.free(t, cache, obj)
        for _ in range(p.objects):
            cache = self._caches[self._next_cache]
            self._next_cache = (self._next_cache + 1) % len(self._caches)
            obj = yield from self.alloc(t, cache, self._flags)
            if obj is not None:
                held.append((cache, obj))
        self.handled += 1

    def counts(self) -> dict[str, int]:
        return {**super().counts(), "irqs_raised": self.raised, "irqs_handled": self.handled}
