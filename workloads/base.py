"""The workload contract: generators of allocator calls running as simulated threads.

A workload receives the machine, the policy and the experiment's caches, and in `start()` spawns
the threads that call `policy.alloc` / `policy.free`. Its parameters are a pydantic model
(`Params`, extra keys forbidden) so experiment files are validated before anything runs.
Every operation goes through `Workload.do_alloc` / `do_free`, which count it and record its
latency, so every workload's figures compare.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from simcore.flags import KM_SLEEP
from simcore.machine import Machine

Gen = Generator[Any, Any, Any]


class WorkloadParams(BaseModel):
    """Base of every workload's parameter model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


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
        m = machine.metrics
        self._h_alloc = m.hist("latency.alloc")
        self._h_free = m.hist("latency.free")

    @property
    def label(self) -> str:
        return f"{self.kind}{self.index}"

    def cache(self, name: str) -> Any:
        return self.caches[name]

    def start(self) -> None:
        raise NotImplementedError

    def do_alloc(self, t: Any, cache: Any, flags: int = KM_SLEEP) -> Gen:
        """Allocate one object, counting it and recording its latency; returns obj or None."""
        start = t.now
        obj = yield from self.policy.alloc(t, cache, flags)
        self._h_alloc.record(t.now - start)
        if obj is None:
            self.failures += 1
            self.machine.metrics.count("alloc.fail")
        else:
            self.allocs += 1
        return obj

    def do_free(self, t: Any, cache: Any, obj: int) -> Gen:
        """Free one object, counting it and recording its latency."""
        start = t.now
        yield from self.policy.free(t, cache, obj)
        self._h_free.record(t.now - start)
        self.frees += 1

    def counts(self) -> dict[str, int]:
        return {"allocs": self.allocs, "frees": self.frees, "alloc_failures": self.failures}
