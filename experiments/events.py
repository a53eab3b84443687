"""Experiment events: things an operator does to a running machine at a given time, from the
`[[events]]` tables of an experiment file.

    [[events]]
    at = "1s"
    cpu_offline = 3          # echo 0 > /sys/devices/system/cpu/cpu3/online

    [[events]]
    at = "2s"
    cpu_online = 3

    [[events]]
    at = "3s"
    retune = "size-64"       # echo "size-64 240 120 8" > /proc/slabinfo
    limit = 240
    batchcount = 120
    shared = 8

How a CPU goes down (2.6.17 kernel/cpu.c cpu_down -> take_cpu_down -> the CPU_DEAD
notifiers): a stopper thread bound to the CPU, SCHED_FIFO 99, takes it as soon as the thread
running there reaches a preemption point (the event log's `cpu_offline` records how long that
took). Threads bound to that CPU alone move to the online CPUs
(move_task_off_dead_cpu, which breaks their affinity); then `policy.cpu_dead` runs on the
controlling thread, on another CPU. Coming back: `policy.cpu_up_prepare`, the stopper
releases the CPU (interrupts raised on it meanwhile are delivered now), the moved threads get
their old affinity back (the model's workloads are per-CPU; the kernel would leave them
unbound), then `policy.cpu_online`. A retune event calls `policy.retune` for a policy that
lists `retune_keys`.

The controlling thread is an unbound thread named `cpuhp` (the process writing to sysfs or
/proc); it needs a CPU like any other thread.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from simcore.cpu import Gen, Thread
from simcore.sched import Priority
from simcore.units import Duration

STOPPER_PRIORITY = Priority("rt", prio=99)
"""stop_machine's threads run SCHED_FIFO at MAX_RT_PRIO - 1."""


class EventSection(BaseModel):
    """One `[[events]]` table: `at` and exactly one kind."""

    model_config = ConfigDict(extra="forbid")
    at: Duration = Field(ge=0, description="simulated time of the event")
    cpu_offline: int | None = Field(None, ge=0, description="take this CPU down")
    cpu_online: int | None = Field(None, ge=0, description="bring this CPU back")
    retune: str | None = Field(None, description="cache to retune (/proc/slabinfo write)")
    limit: int | None = None
    batchcount: int | None = None
    shared: int | None = None

    @property
    def kind(self) -> str:
        return ("cpu_offline" if self.cpu_offline is not None else
                "cpu_online" if self.cpu_online is not None else "retune")


class EventError(ValueError):
    """A bad event: `key` names the field, the message says why."""

    def __init__(self, index: int, key: str, reason: str) -> None:
        super().__init__(reason)
        self.index = index
        self.key = key


RETUNE_FIELDS = ("limit", "batchcount", "shared")


def check_events(events: list[EventSection], ncpus: int, caches: list[str],
                 policy_cls: Any) -> None:
    """Raise EventError for an event that cannot happen: not exactly one kind, a CPU that does
    not exist or is not in the state the event needs (events in time order), the last online
    CPU taken down, a retune of an unknown cache, for a policy without retuning, or with
    values /proc/slabinfo would ignore (limit < 1, batchcount < 1 or > limit, shared < 0)."""
    online = [True] * ncpus
    for i, ev in sorted(enumerate(events), key=lambda p: (p[1].at, p[0])):
        kinds = [k for k in ("cpu_offline", "cpu_online", "retune") if getattr(ev, k) is not None]
        if len(kinds) != 1:
            raise EventError(i, "at", "an event needs exactly one of cpu_offline, cpu_online, "
                                      f"retune (got {', '.join(kinds) or 'none'})")
        kind = kinds[0]
        if kind != "retune":
            for key in RETUNE_FIELDS:
                if getattr(ev, key) is not None:
                    raise EventError(i, key, "only a retune event takes it")
            cpu = getattr(ev, kind)
            if cpu >= ncpus:
                raise EventError(i, kind, f"no CPU {cpu} (the machine has {ncpus})")
            if online[cpu] == (kind == "cpu_online"):
                state = "online" if online[cpu] else "offline"
                raise EventError(i, kind, f"CPU {cpu} is already {state} at that time")
            if kind == "cpu_offline" and sum(online) == 1:
                raise EventError(i, kind, "cannot take the last online CPU down")
            online[cpu] = kind == "cpu_online"
            continue
        if not policy_cls.retune_keys:
            raise EventError(i, "retune", f"policy {policy_cls.name!r} has no run-time "
                                          "retuning")
        if ev.retune not in caches:
            raise EventError(i, "retune", f"no cache named {ev.retune!r}")
        for key in policy_cls.retune_keys:
            if getattr(ev, key) is None:
                raise EventError(i, key, "a retune event sets limit, batchcount and shared")
        bad = ("limit" if ev.limit < 1 else
               "batchcount" if ev.batchcount < 1 or ev.batchcount > ev.limit else
               "shared" if ev.shared < 0 else None)
        if bad is not None:
            raise EventError(i, bad, "needs limit >= 1, 1 <= batchcount <= limit and "
                             "shared >= 0 (the kernel ignores such a write)")


class Hotplug:
    """The machine's online CPUs, and the stopper threads holding offline ones."""

    def __init__(self, machine: Any, policy: Any) -> None:
        self.machine = machine
        self.policy = policy
        self.stoppers: dict[int, Any] = {}
        """CPU -> event that releases its stopper thread."""
        self.moved: dict[int, list[tuple[Thread, list[int] | None]]] = {}
        """CPU -> threads moved off it with their old affinity."""

    def online_ids(self) -> list[int]:
        return [c.id for c in self.machine.cpus if self.policy.cpu_is_online[c.id]]

    def cpu_down(self, t: Thread, cpu: int) -> Gen:
        """Take `cpu` down: the stopper takes it, bound threads move, then CPU_DEAD."""
        m = self.machine
        taken = m.env.event()
        release = m.env.event()
        self.stoppers[cpu] = release

        def stopper(s: Thread) -> Gen:
            self.policy.cpu_is_online[cpu] = False
            m.metrics.event("cpu_offline", cpu=cpu, waited_ns=m.env.now - requested)
            self._move_threads(cpu)
            taken.succeed()
            yield release
            yield from s.sync()

        requested = m.env.now
        m.spawn(f"migration/{cpu}", stopper, cpu=cpu, pri=STOPPER_PRIORITY)
        t.affinity = [i for i in self.online_ids() if i != cpu]
        yield m.env.timeout(0)  # the stopper reaches the run queue; this thread keeps its CPU
        target = m.cpus[cpu]
        if target.current is not None and target.current is not target.idle_thread:
            target.need_resched = True  # wake_up_new_task: an RT thread preempts at once
        yield from t.block(taken, ("cpu_down", cpu))
        t.affinity = self.online_ids()
        yield from self.policy.cpu_dead(t, cpu)

    def cpu_up(self, t: Thread, cpu: int) -> Gen:
        """Bring `cpu` back: CPU_UP_PREPARE, the stopper lets go, threads return, CPU_ONLINE."""
        yield from self.policy.cpu_up_prepare(t, cpu)
        self.policy.cpu_is_online[cpu] = True
        self.stoppers.pop(cpu).succeed()
        self.machine.env.process(self._return_threads(cpu, self.moved.pop(cpu, [])))
        t.affinity = self.online_ids()
        yield from self.policy.cpu_online(t, cpu)

    def _return_threads(self, cpu: int, threads: list[tuple[Thread, list[int] | None]]) -> Gen:
        """Give the moved threads their affinity back, each at its next scheduling point: a
        sleeping thread at once (it picks `cpu` when it wakes), a waiting one is moved to
        `cpu`'s run queue, a running one is looked at again every tick until it waits."""
        m = self.machine
        left = list(threads)
        while left:
            for th, aff in list(left):
                if any(c.current is th for c in m.cpus):
                    continue
                left.remove((th, aff))
                for other in m.cpus:
                    entry = next(((x, ev) for x, ev in other.runq if x is th), None)
                    if entry is not None:
                        other.runq.remove(entry)
                        if th.affinity is None or len(th.affinity) > 1:
                            m.unpinned_waiting -= 1
                        th.affinity = aff
                        th.migrate_to(m.cpus[cpu])
                        m.cpus[cpu].runq.append(entry)
                        m.cpus[cpu].dispatch_next()
                        break
                else:
                    th.affinity = aff
            if left:
                yield m.env.timeout(m.tick_ns)

    def _move_threads(self, cpu: int) -> None:
        """move_task_off_dead_cpu for every thread bound to `cpu` alone and every thread
        waiting in its run queue."""
        m = self.machine
        dead = m.cpus[cpu]
        online = self.online_ids()
        moved = self.moved.setdefault(cpu, [])
        waiting = [(th, ev, th.affinity is None or len(th.affinity) > 1)
                   for th, ev in dead.runq if not th.name.startswith("migration/")]
        for th, ev, _counted in waiting:
            dead.runq.remove((th, ev))
        for th in m.threads:
            if th.alive and th.affinity == [cpu] and not th.name.startswith("migration/"):
                moved.append((th, th.affinity))
                th.affinity = list(online)
        for th, ev, counted in waiting:
            if not counted and len(online) > 1:
                m.unpinned_waiting += 1
            target = min((m.cpus[i] for i in online),
                         key=lambda c: (c.current is not None, len(c.runq), c.id))
            th.migrate_to(target)
            target.runq.append((th, ev))
            if target.current is None:
                target.dispatch_next()


def schedule_events(machine: Any, policy: Any, caches: dict[str, Any],
                    events: list[EventSection]) -> None:
    """Start the `cpuhp` thread that carries out `events` at their times (file order breaks
    ties)."""
    if not events:
        return
    hp = Hotplug(machine, policy)
    order = [ev for _i, ev in sorted(enumerate(events), key=lambda p: (p[1].at, p[0]))]

    def controller(t: Thread) -> Gen:
        for ev in order:
            if ev.at > t.now:
                yield from t.sleep(ev.at - t.now)
            if ev.cpu_offline is not None:
                yield from hp.cpu_down(t, ev.cpu_offline)
            elif ev.cpu_online is not None:
                yield from hp.cpu_up(t, ev.cpu_online)
            else:
                values = {k: getattr(ev, k) for k in policy.retune_keys}
                yield from policy.retune(t, caches[ev.retune], values)

    machine.spawn("cpuhp", controller, affinity=list(range(machine.ncpus)))
