"""Deadlock detection: self-deadlock on a spinlock, a wait-for graph over threads, and a
hung-task watchdog. A detected deadlock ends the run with a report instead of a Python hang.

Wait-for edges: a thread spinning on a lock waits for the lock's owner; a thread sleeping on a
wait queue waits for the queue's registered wakers; a thread waiting for a CPU waits for the
thread on it; a thread in direct reclaim waits for the dependency it runs. A cycle among
threads that have all waited longer than the watchdog's limit is a deadlock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from simcore.units import format_duration

if TYPE_CHECKING:
    from simcore.cpu import Thread
    from simcore.machine import Machine


@dataclass
class ThreadState:
    """One thread's line in a deadlock report."""

    name: str
    cpu: int
    context: str
    waits_on: str
    since: int
    holds: list[str] = field(default_factory=list)

    def line(self) -> str:
        holds = ", ".join(self.holds) or "nothing"
        return (f"  {self.name} on CPU{self.cpu} ({self.context}) waits on {self.waits_on} "
                f"since t={format_duration(self.since)}; holds {holds}")


@dataclass
class DeadlockReport:
    """What a deadlock report says: kind, when, the threads and the cycle."""

    kind: str
    """self-deadlock, cycle or hung-task."""
    time: int
    summary: str
    threads: list[ThreadState]
    cycle: list[str] = field(default_factory=list)

    def text(self) -> str:
        out = [f"DEADLOCK ({self.kind}) at t={format_duration(self.time)} ({self.time} ns)",
               self.summary, "threads:"]
        out += [ts.line() for ts in self.threads]
        if self.cycle:
            out.append("cycle: " + " -> ".join(self.cycle + [self.cycle[0]]))
        return "\n".join(out) + "\n"


class SimulationDeadlock(Exception):
    """Raised inside the simulation when a deadlock is detected; carries the report."""

    def __init__(self, report: DeadlockReport) -> None:
        # SimPy re-raises a process's exception as type(exc)(*exc.args): keep the report in args
        super().__init__(report)
        self.report = report

    def __str__(self) -> str:
        return self.report.summary


def wait_target(t: Thread) -> str:
    """Readable name of what `t` waits on."""
    w = t.blocked_on
    if w is None:
        return "nothing (running)"
    if isinstance(w, tuple):
        return ":".join(str(getattr(x, "name", x)) for x in w)
    return f"{type(w).__name__} {getattr(w, 'name', w)}"


def thread_state(t: Thread, waits_on: str | None = None, since: int | None = None) -> ThreadState:
    return ThreadState(t.name, t.cpu.id if t.cpu is not None else -1,
                       "irq" if t.in_irq else "process",
                       waits_on if waits_on is not None else wait_target(t),
                       t.blocked_since if since is None else since,
                       [lk.name for lk in t.held])


def self_deadlock(machine: Machine, lock: Any, t: Thread) -> None:
    """A context asks for a spinlock already held on its own CPU: report and stop the run."""
    now = machine.env.now
    ctx = "IRQ handler" if t.in_irq else "process context"
    owner_ctx = "IRQ context" if lock.owner_in_irq else "process context"
    holder = ThreadState(f"{t.name} [{owner_ctx}]", t.cpu.id, owner_ctx,
                         "nothing: interrupted or re-entering", lock.acquired_at,
                         [lk.name for lk in t.held])
    waiter = ThreadState(f"{t.name} [{ctx}]", t.cpu.id, "irq" if t.in_irq else "process",
                         f"SpinLock {lock.name}", now, [])
    summary = (f"self-deadlock on {lock.name}: CPU{t.cpu.id} already holds it (taken in "
               f"{owner_ctx} at t={format_duration(lock.acquired_at)}) and its {ctx} spins "
               f"on it; the holder cannot run to release it")
    rep = DeadlockReport("self-deadlock", now, summary, [holder, waiter],
                         [f"{t.name} [{ctx}]", f"{t.name} [{owner_ctx}]"])
    machine.metrics.event("deadlock", type="self-deadlock", lock=lock.name, cpu=t.cpu.id)
    raise SimulationDeadlock(rep)


class DeadlockDetector:
    """Wait-for graph over the machine's threads plus a hung-task watchdog."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.timeout = machine.config.hung_task_timeout
        """Report threads waiting longer than this, ns (0: watchdog off)."""
        self.report: DeadlockReport | None = None

    def start(self) -> None:
        if self.timeout > 0:
            self.machine.env.process(self._watchdog())

    def edges(self, t: Thread) -> list[Thread]:
        """Threads that `t` waits for."""
        w = t.blocked_on
        if w is None:
            return []
        owner = getattr(w, "owner", None)
        if owner is not None:
            return [owner]
        wakers = getattr(w, "wakers", None)
        if wakers:
            return [x for x in (getattr(k, "worker", k) for k in wakers) if x is not None]
        if isinstance(w, tuple) and w and w[0] == "cpu":
            cur = w[1].current
            return [cur] if cur is not None else []
        deps = getattr(t, "waits_for", None)
        return list(deps) if deps else []

    def find_cycle(self, threads: list[Thread]) -> list[Thread]:
        """A cycle in the wait-for graph among `threads`, or []."""
        color: dict[int, int] = {}
        stack: list[Thread] = []

        def dfs(t: Thread) -> list[Thread]:
            color[id(t)] = 1
            stack.append(t)
            for n in self.edges(t):
                c = color.get(id(n), 0)
                if c == 1:
                    return stack[stack.index(n):]
                if c == 0:
                    found = dfs(n)
                    if found:
                        return found
            stack.pop()
            color[id(t)] = 2
            return []

        for t in threads:
            if color.get(id(t), 0) == 0:
                cyc = dfs(t)
                if cyc:
                    return cyc
        return []

    def check(self) -> DeadlockReport | None:
        """Look for a cycle of long waits, else for hung tasks; the report or None."""
        m = self.machine
        now = m.env.now
        stuck = [t for t in m.threads
                 if t.alive and t.blocked_on is not None and now - t.blocked_since >= self.timeout
                 and not _idle_wait(t.blocked_on)]
        if not stuck:
            return None
        cycle = self.find_cycle(stuck)
        if cycle:
            names = [t.name for t in cycle]
            return DeadlockReport("cycle", now, "wait-for cycle: " + " -> ".join(names),
                                  [thread_state(t) for t in cycle], names)
        oldest = min(stuck, key=lambda t: t.blocked_since)
        return DeadlockReport(
            "hung-task", now,
            f"hung task: {oldest.name} blocked for more than {format_duration(self.timeout)}",
            [thread_state(t) for t in sorted(stuck, key=lambda t: t.blocked_since)])

    def _watchdog(self):  # type: ignore[no-untyped-def]
        env = self.machine.env
        step = max(1, self.timeout // 4)
        while True:
            yield env.timeout(step)
            rep = self.check()
            if rep is not None:
                self.report = rep
                self.machine.metrics.event("deadlock", type=rep.kind, summary=rep.summary)
                raise SimulationDeadlock(rep)


def _idle_wait(w: Any) -> bool:
    return isinstance(w, tuple) and bool(w) and w[0] in ("taskq_idle", "kswapd_idle", "sleep")
