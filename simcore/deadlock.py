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
    task = getattr(t, "task", None)
    context = "irq" if t.in_irq else "process"
    if task is not None:
        context += f", task {getattr(task.func, '__name__', task.func)}"
    return ThreadState(t.name, t.cpu.id if t.cpu is not None else -1, context,
                       waits_on if waits_on is not None else wait_target(t),
                       t.blocked_since if since is None else since,
                       [lk.name for lk in t.held])


def self_deadlock(machine: Any, lock: Any, t: Thread) -> None:
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
    """Wait-for graph over the machine's threads plus a hung-task watchdog.

    Every `deadlock_check` ns the graph of current waits is searched for a cycle. A cycle of
    untimed waits (spinlocks, wait_event, bits, reclaim dependencies) that was already there at
    the previous check is a deadlock: nothing in it can ever run again. A cycle that includes a
    timed wait (wait_event_timeout, which the SPL's growth wait loops on) may break by itself, so
    it is a deadlock only once every thread in it has made no progress for
    `deadlock_timed_limit` ns. Separately, with `hung_task_timeout` set, a thread blocked or
    spinning without progress for longer than that is reported as a hung task (the kernel's
    hung-task / soft-lockup detectors). "Progress" is measured from the start of the operation
    the thread is in (`Thread.stalled_since`) when there is one, else from the start of its wait.
    """

    def __init__(self, machine: Any) -> None:
        self.machine = machine
        cfg = machine.config
        self.timeout = cfg.hung_task_timeout
        """Report threads waiting longer than this, ns (0: watchdog off)."""
        self.interval = cfg.deadlock_check
        """Period of the cycle check, ns (0: off)."""
        self.timed_limit = cfg.deadlock_timed_limit
        self.report: DeadlockReport | None = None
        self._started = False

    def start(self) -> None:
        """Start the periodic check (once; idempotent)."""
        if self._started:
            return
        self._started = True
        steps = [x for x in (self.interval, self.timeout // 4) if x > 0]
        if steps:
            self.machine.env.process(self._watchdog(min(steps)))

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
            out: list[Thread] = []
            for k in wakers:
                out.extend(_waker_threads(k))
            return out
        if isinstance(w, tuple) and w and w[0] == "cpu":
            cur = w[1].current
            return [cur] if cur is not None else []
        deps = getattr(t, "waits_for", None)
        return list(deps) if deps else []

    def find_cycle(self, threads: list[Thread]) -> list[Thread]:
        """A cycle in the wait-for graph among `threads`, or []."""
        members = {id(t) for t in threads}
        color: dict[int, int] = {}
        stack: list[Thread] = []

        def dfs(t: Thread) -> list[Thread]:
            color[id(t)] = 1
            stack.append(t)
            for n in self.edges(t):
                if id(n) not in members:
                    continue
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
        """Look for a deadlocked cycle, else for hung tasks; the report or None."""
        m = self.machine
        now = m.env.now
        waiting = [t for t in m.threads
                   if t.alive and t.blocked_on is not None and not _idle_wait(t.blocked_on)]
        if not waiting:
            return None
        cycle = self.find_cycle(waiting)
        if cycle and self._persistent(cycle, now):
            names = [t.name for t in cycle]
            others = [t for t in waiting if t not in cycle and self._reaches(t, cycle)]
            summary = "wait-for cycle: " + " -> ".join(names + [names[0]])
            if others:
                summary += f"; {len(others)} more thread(s) wait on it"
            return DeadlockReport("cycle", now, summary,
                                  [thread_state(t, since=stalled_since(t)) for t in cycle + others],
                                  names)
        if self.timeout <= 0:
            return None
        stuck = [t for t in waiting if now - stalled_since(t) >= self.timeout]
        if not stuck:
            return None
        stuck.sort(key=stalled_since)
        oldest = stuck[0]
        return DeadlockReport(
            "hung-task", now,
            f"hung task: {oldest.name} made no progress for more than "
            f"{format_duration(self.timeout)}",
            [thread_state(t, since=stalled_since(t)) for t in stuck])

    def _persistent(self, cycle: list[Thread], now: int) -> bool:
        if any(t.wait_timed for t in cycle):
            return all(now - stalled_since(t) >= self.timed_limit for t in cycle)
        return all(now - t.blocked_since >= self.interval for t in cycle)

    def _reaches(self, t: Thread, cycle: list[Thread]) -> bool:
        seen: set[int] = set()
        todo = [t]
        while todo:
            x = todo.pop()
            if x in cycle:
                return True
            if id(x) in seen:
                continue
            seen.add(id(x))
            todo.extend(self.edges(x))
        return False

    def _watchdog(self, step: int):  # type: ignore[no-untyped-def]
        env = self.machine.env
        while True:
            yield env.timeout(step)
            rep = self.check()
            if rep is not None:
                self.report = rep
                self.machine.metrics.event("deadlock", type=rep.kind, summary=rep.summary)
                raise SimulationDeadlock(rep)


def stalled_since(t: Thread) -> int:
    """When `t` last made progress: the start of its current operation, else of its wait."""
    s = t.stalled_since
    return t.blocked_since if s is None else min(s, t.blocked_since)


def _waker_threads(k: Any) -> list[Thread]:
    """The threads behind a registered waker: a thread, a taskq task (its worker, or while it is
    still queued every busy worker of its taskq), or a taskq (its busy workers)."""
    if hasattr(k, "blocked_on"):
        return [k]
    worker = getattr(k, "worker", None)
    if worker is not None:
        return [worker]
    tq = getattr(k, "taskq", None) or (k if hasattr(k, "workers") else None)
    if tq is None:
        return []
    return [w for w in tq.workers if getattr(w, "task", None) is not None]


def _idle_wait(w: Any) -> bool:
    return isinstance(w, tuple) and bool(w) and w[0] in ("taskq_idle", "kswapd_idle", "sleep")
