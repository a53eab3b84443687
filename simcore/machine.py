"""The simulated machine: SimPy environment, NUMA topology, costs, random streams, metrics,
memory, and the threads and interrupts that run on its CPUs.

simcore's modules import one way, bottom to top (tests/test_sched.py checks it): units, rand,
flags, costs, sched, clock (the event loop) -> cpu (the local clock and threads) -> metrics,
deadlock -> spinlock, mutex, waitqueue, taskq, timer (locks and queues) -> memory -> machine
(assembles them) -> trace (the optional timeline recorder; it reaches the others only through
hooks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import simpy

from simcore.clock import Clock
from simcore.costs import CostTable
from simcore.cpu import CPU, Gen, IrqHandler, Thread
from simcore.deadlock import DeadlockDetector
from simcore.memory import MemoryConfig, PageAllocator
from simcore.metrics import Metrics, SamplingConfig
from simcore.rand import RandomStream
from simcore.sched import (
    NICE_0,
    PREEMPT_MODELS,
    Priority,
    default_latency,
    default_wakeup_granularity,
)


@dataclass
class MachineConfig:
    """Topology and scheduler parameters."""

    nodes: int = 1
    """NUMA nodes."""
    cpus_per_node: int = 4
    """CPUs in each node."""
    hz: int = 1000
    """Timer ticks per second (CONFIG_HZ); jiffies-based timeouts derive from it."""
    sched_slice: int = 3_000_000
    """The scheduler tick preempts a fair thread that ran this long while others wait, ns."""
    preempt: str = "voluntary"
    """Preemption model: none, voluntary (the distributions' default) or full."""
    sched_wakeup_granularity: int = 0
    """sched_wakeup_granularity_ns; 0 = 1 ms x (1 + log2(min(CPUs, 8)))."""
    sched_latency: int = 0
    """sched_latency_ns (sleeper credit is half of it); 0 = 6 ms x (1 + log2(min(CPUs, 8)))."""
    batching: bool = True
    """Charge local work to the thread's clock (True) or one SimPy event per step (False)."""
    hung_task_timeout: int = 0
    """Watchdog: report threads blocked or spinning longer than this, ns (0 = off)."""
    deadlock_check: int = 10_000_000
    """Period of the wait-for-graph cycle check, ns (0 = off)."""
    deadlock_timed_limit: int = 1_000_000_000
    """A cycle that includes a timed wait (which may end by itself) is a deadlock only when its
    threads have made no progress for this long, ns."""
    fast_paths: bool = True
    """Let workloads use the policies' plain-function fast paths (results are identical)."""


@dataclass
class Machine:
    """A multicore machine on which allocator policies run."""

    config: MachineConfig = field(default_factory=MachineConfig)
    costs: CostTable = field(default_factory=CostTable.build)
    seed: int = 0
    memory_config: MemoryConfig = field(default_factory=MemoryConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def __post_init__(self) -> None:
        cfg = self.config
        self.env = Clock()
        """The SimPy environment; env.now is simulated time in ns."""
        self.hz = cfg.hz
        self.tick_ns = 1_000_000_000 // cfg.hz
        """Length of one timer tick (1/HZ), ns."""
        self.nodes = cfg.nodes
        self.sched_slice = cfg.sched_slice
        if cfg.preempt not in PREEMPT_MODELS:
            raise ValueError(f"preempt must be one of {', '.join(PREEMPT_MODELS)}")
        self.preempt = cfg.preempt
        self.preempt_full = cfg.preempt == "full"
        """Every sync outside an atomic section is a preemption point (CONFIG_PREEMPT)."""
        self.preempt_voluntary = cfg.preempt == "voluntary"
        """might_sleep points are preemption points (CONFIG_PREEMPT_VOLUNTARY)."""
        ncpus = cfg.nodes * cfg.cpus_per_node
        self.sched_wakeup_granularity = (cfg.sched_wakeup_granularity
                                         or default_wakeup_granularity(ncpus))
        self.sched_latency = cfg.sched_latency or default_latency(ncpus)
        self.batching = cfg.batching
        self.fast_paths = cfg.fast_paths
        self.metrics = Metrics(self.env, self.sampling)
        self.tracer: Any = None
        """A simcore.trace.TraceRecorder while a trace is recorded, else None."""
        self.irq_off = self.metrics.hist("irq_off")
        """Histogram of IRQ-off section lengths, ns."""
        self.irq_latency = self.metrics.hist("irq_latency")
        """Histogram of interrupt delivery latencies, ns."""
        self._irq_seq = 0
        self.unpinned_waiting = 0
        self.threads: list[Thread] = []
        self.cpus: list[CPU] = [
            CPU(self, n * cfg.cpus_per_node + i, n)
            for n in range(cfg.nodes) for i in range(cfg.cpus_per_node)
        ]
        self._streams: dict[str, RandomStream] = {}
        self.memory = PageAllocator(self, self.memory_config)
        self.deadlock = DeadlockDetector(self)
        """Wait-for graph and watchdog; reports end the run with SimulationDeadlock."""

    # --- topology and time ----------------------------------------------------------------
    @property
    def ncpus(self) -> int:
        return len(self.cpus)

    def cpus_of_node(self, node: int) -> list[CPU]:
        return [c for c in self.cpus if c.node == node]

    def jiffies(self, ticks: int | float) -> int:
        """ns in `ticks` timer ticks at this machine's HZ."""
        return int(ticks * 1_000_000_000 // self.hz)

    def rng(self, name: str) -> RandomStream:
        """The named random stream (created on first use, seeded from run seed and name)."""
        s = self._streams.get(name)
        if s is None:
            s = self._streams[name] = RandomStream(self.seed, name)
        return s

    # --- threads and interrupts -----------------------------------------------------------
    def spawn(self, name: str, body: Callable[[Thread], Gen], cpu: int | None = None,
              affinity: list[int] | None = None, pri: Priority = NICE_0) -> Thread:
        """Start a kernel thread running `body(t)`, pinned to `cpu` or free over `affinity`,
        at scheduling class and priority `pri` (SCHED_NORMAL nice 0 unless given)."""
        c = self.cpus[cpu] if cpu is not None else None
        t = Thread(self, name, body, cpu=c, affinity=affinity, se=pri.entity())
        self.threads.append(t)
        return t

    def raise_irq(self, cpu: int, handler: IrqHandler, name: str, at: int | None = None) -> None:
        """Raise an interrupt on `cpu` now or at absolute time `at`."""
        self.cpus[cpu].schedule_irq(self.env.now if at is None else at, handler, name)

    def steal_runnable(self, cpu: CPU) -> tuple[Thread, simpy.Event] | None:
        """A waiting unpinned thread allowed on `cpu`, taken from another CPU's run queue."""
        if not self.unpinned_waiting:
            return None
        for other in self.cpus:
            for i, (t, ev) in enumerate(other.runq):
                if t.affinity is None or (len(t.affinity) > 1 and cpu.id in t.affinity):
                    del other.runq[i]
                    self.unpinned_waiting -= 1
                    return t, ev
        return None

    def note_sleep_in_atomic(self, t: Thread, what: Any) -> None:
        """Record a sleep with IRQs off, a spinlock held or in IRQ context
        ("BUG: scheduling while atomic" / "sleeping function called from invalid context")."""
        self.metrics.count("sched.sleep_in_atomic")
        self.metrics.event("sleep_in_atomic", thread=t.name, cpu=t.cpu.id,
                           irqs_off=t.irqs_off, locks=len(t.held), on=describe(what))

    # --- running --------------------------------------------------------------------------
    def run(self, until: int) -> None:
        """Run the simulation to absolute time `until` (ns). Raises SimulationDeadlock."""
        self.metrics.timeline.start()
        self.deadlock.start()
        self.env.run(until=until)


def describe(what: Any) -> str:
    """Readable name of a wait target."""
    if isinstance(what, tuple):
        return ":".join(describe(w) for w in what)
    return getattr(what, "name", str(what))
