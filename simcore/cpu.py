"""CPUs and the kernel threads that run on them, with IRQ state and interrupt delivery.

A `CPU` runs one `Thread` at a time; a thread that sleeps gives its CPU up, a thread that spins
keeps it. Local work is charged to the thread's clock (`charge`) without a SimPy event; the
thread catches the simulation clock up (`sync`) before it touches anything another CPU can
observe. Interrupts are scheduled on a CPU at known times; a thread running with IRQs on takes
them at its next synchronisation point, a thread with IRQs off takes them when it enables IRQs
(the latency is recorded), an idle CPU takes them at once, and a thread spinning with IRQs on
is interrupted in its spin.

Modelling choice (documented in docs/simcore.md): with IRQs on, an interrupt is taken at the
running thread's next synchronisation point rather than between two local steps. Local runs
between synchronisation points are short (a magazine hit, a few list operations), and the rule
is what makes batched and one-event-per-step execution give identical results.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import simpy

if TYPE_CHECKING:
    from simcore.machine import Machine

Gen = Generator[Any, Any, Any]
IrqHandler = Callable[["Thread"], Gen]


class Irq:
    """One interrupt scheduled on a CPU."""

    __slots__ = ("at", "seq", "handler", "name", "delivered")

    def __init__(self, at: int, seq: int, handler: IrqHandler, name: str) -> None:
        self.at = at
        self.seq = seq
        self.handler = handler
        self.name = name
        self.delivered = False

    def __lt__(self, other: Irq) -> bool:
        return (self.at, self.seq) < (other.at, other.seq)


class CPU:
    """One simulated CPU: the thread on it, its run queue and its scheduled interrupts."""

    def __init__(self, machine: Machine, cpu_id: int, node: int) -> None:
        self.machine = machine
        self.id = cpu_id
        """Logical CPU number (smp_processor_id)."""
        self.node = node
        """NUMA node of this CPU."""
        self.current: Thread | None = None
        """Thread running on the CPU, None when idle."""
        self.runq: deque[tuple[Thread, simpy.Event]] = deque()
        """Threads waiting for this CPU, FIFO."""
        self.irqs: list[Irq] = []
        """Scheduled interrupts not yet delivered (heap by arrival time)."""
        self.idle_thread = Thread(machine, f"swapper/{cpu_id}", None, cpu=self)
        """Context in which interrupts run when the CPU is idle."""
        self.irq_off_total = 0
        """ns spent with IRQs disabled (all threads and handlers on this CPU)."""
        self.irq_off_max = 0
        """Longest IRQ-off section on this CPU, ns."""
        self.irq_count = 0
        """Interrupts delivered on this CPU."""
        self.busy_ns = 0
        """ns of charged work and spinning (CPU utilisation)."""
        self._idle_delivering = False

    def __repr__(self) -> str:
        return f"CPU{self.id}"

    # --- interrupts ---------------------------------------------------------------------
    def schedule_irq(self, at: int, handler: IrqHandler, name: str) -> Irq:
        """Raise an interrupt at absolute time `at` (>= now)."""
        m = self.machine
        m._irq_seq += 1
        irq = Irq(at, m._irq_seq, handler, name)
        heapq.heappush(self.irqs, irq)
        m.env.timeout(at - m.env.now).callbacks.append(lambda _ev: self._irq_arrives(irq))
        return irq

    def irq_due(self, now: int) -> bool:
        """True when an undelivered interrupt has arrived by `now`."""
        return bool(self.irqs) and self.irqs[0].at <= now

    def take_due_irq(self, now: int) -> Irq | None:
        """Remove and return the earliest interrupt that has arrived by `now`."""
        if self.irqs and self.irqs[0].at <= now:
            irq = heapq.heappop(self.irqs)
            irq.delivered = True
            return irq
        return None

    def _irq_arrives(self, irq: Irq) -> None:
        if irq.delivered:
            return
        cur = self.current
        if cur is None:
            if not self._idle_delivering:
                self._idle_delivering = True
                self.current = self.idle_thread
                if self.machine.tracer is not None:
                    self.machine.tracer.on_cpu(self, self.idle_thread)
                self.machine.env.process(self._idle_deliver())
        elif (cur.spinning is not None and not cur.irqs_off and not cur.in_irq
              and not cur._kicked):
            cur._kicked = True
            cur.process.interrupt("irq")
        # otherwise the running thread takes it at its next sync or irq-enable point

    def _idle_deliver(self) -> Gen:
        t = self.idle_thread
        t.slice_start = self.machine.env.now
        yield from t.deliver_irqs()
        yield from t.sync()
        self._idle_delivering = False
        self.current = None
        if self.machine.tracer is not None:
            self.machine.tracer.on_cpu(self, None)
        self.dispatch_next()

    # --- scheduling ---------------------------------------------------------------------
    def dispatch_next(self) -> None:
        """Give the idle CPU to the next runnable thread (own queue first, then steal)."""
        if self.current is not None:
            return
        if self.runq:
            t, ev = self.runq.popleft()
            if t.affinity is None or len(t.affinity) > 1:
                self.machine.unpinned_waiting -= 1
        else:
            found = self.machine.steal_runnable(self)
            if found is None:
                if self.irqs and self.irqs[0].at <= self.machine.env.now:
                    self._irq_arrives(self.irqs[0])
                return
            t, ev = found
        self.current = t
        t.cpu = self
        t.slice_start = self.machine.env.now
        if self.machine.tracer is not None:
            self.machine.tracer.on_cpu(self, t)
        ev.succeed()


class Thread:
    """A simulated kernel thread: workload thread, taskq worker, reaper, or IRQ context."""

    def __init__(self, machine: Machine, name: str, body: Callable[[Thread], Gen] | None,
                 cpu: CPU | None = None, affinity: list[int] | None = None) -> None:
        self.machine = machine
        self.env = machine.env
        self.name = name
        """Thread name as ps would show it (spl_kmem_cache/0, steady0/3, ...)."""
        self.cpu: CPU = cpu  # type: ignore[assignment]
        """CPU the thread runs (or last ran) on; re-read after anything that sleeps."""
        if affinity is None and cpu is not None:
            affinity = [cpu.id]
        self.affinity: list[int] | None = affinity
        """CPU ids the thread may run on; None means any CPU."""
        self.pending = 0
        """Charged local work not yet reflected in the simulation clock, ns."""
        self._steps: list[int] = []
        self._batched = machine.batching
        self._costs = machine.costs.values
        self._irq_off_hist = machine.irq_off
        self._tracer = machine.tracer
        """The machine's TraceRecorder, or None (one attribute test on the IRQ-enable path)."""
        self.irqs_off = False
        """IRQs disabled on this CPU by this context (local_irq_disable state)."""
        self.irq_off_start = 0
        self.in_irq = 0
        """Nesting depth of interrupt handlers running in this thread's context."""
        self.preempt_count = 0
        """Spinlocks held (preemption disabled while > 0)."""
        self.spinning: Any = None
        """The lock this thread is spinning on, if any."""
        self._kicked = False
        self.blocked_on: Any = None
        """What the thread waits for (lock, wait queue, bit, CPU), for the deadlock detector."""
        self.blocked_since = 0
        self._prio = 2 + len(machine.threads)
        """Tie-break among events due at the same instant: spawn order (see `_timeout`)."""
        self.wait_timed = False
        """The current wait ends by itself after a timeout (wait_event_timeout)."""
        self.stalled_since: int | None = None
        """Start of the operation the thread is in (a slow-path allocation or free, a taskq task):
        the deadlock detector measures "no progress" from here across repeated timed waits."""
        self.held: list[Any] = []
        """Locks held, in acquisition order."""
        self.slice_start = 0
        self.alive = True
        self.process: simpy.Process | None = None
        if body is not None:
            self.process = self.env.process(self._main(body))

    def __repr__(self) -> str:
        return f"<Thread {self.name}>"

    # --- the local clock -----------------------------------------------------------------
    @property
    def now(self) -> int:
        """This thread's time: the simulation clock plus charged but not yet synced work."""
        return self.env._now + self.pending  # simpy's `now` property, without the call

    def charge(self, cost: str, n: int = 1) -> None:
        """Charge `n` times a cost-table entry to the local clock (no event)."""
        ns = self._costs[cost] * n
        self.pending += ns
        if not self._batched and ns:
            self._steps.append(ns)

    def charge_ns(self, ns: int) -> None:
        """Charge an explicit number of ns of local work (no event)."""
        self.pending += ns
        if not self._batched and ns:
            self._steps.append(ns)

    def _timeout(self, ns: int) -> simpy.Event:
        """A timeout ordered, among events due at the same instant, by the thread's spawn order
        rather than by creation order: batched and unbatched runs create their timeouts at different
        moments, and equal-time ties must resolve the same way in both."""
        ev = simpy.Event(self.env)
        ev._ok = True
        ev._value = None
        self.env.schedule(ev, self._prio, ns)
        return ev

    def mark(self) -> tuple[int, int]:
        """The local clock's state, for `rollback` when a fast path declines after charging."""
        return self.pending, len(self._steps)

    def rollback(self, mark: tuple[int, int]) -> None:
        """Undo the charges made since `mark` (nothing was synced in between)."""
        self.pending, n = mark
        del self._steps[n:]

    def _advance(self) -> Gen:
        p = self.pending
        self.cpu.busy_ns += p
        if self._batched:
            yield self._timeout(p)
        else:
            steps, self._steps = self._steps, []
            for ns in steps:
                yield self._timeout(ns)
        self.pending = 0

    def sync(self) -> Gen:
        """Bring the simulation clock up to this thread's time, take due interrupts if IRQs
        are on, and give the CPU to a waiting thread when the time slice is used up."""
        p = self.pending
        if p:
            self.cpu.busy_ns += p
            if self._batched:
                yield self._timeout(p)
            else:
                steps, self._steps = self._steps, []
                for ns in steps:
                    yield self._timeout(ns)
            self.pending = 0
        cpu = self.cpu
        if (not self.irqs_off and not self.in_irq and cpu.irqs
                and cpu.irqs[0].at <= self.env.now):
            yield from self.deliver_irqs()
        if (cpu.runq and not self.preempt_count and not self.irqs_off and not self.in_irq
                and self.env.now - self.slice_start >= self.machine.sched_slice):
            yield from self._preempt()

    def irq_free_for(self, ns: int) -> bool:
        """True when no interrupt arrives on this CPU within the next `ns` of local time, so a
        fast path that enables IRQs at its end will not have to deliver one."""
        irqs = self.cpu.irqs
        return not irqs or irqs[0].at > self.env.now + self.pending + ns

    def checkpoint(self) -> Gen:
        """A scheduling point between operations (the timer tick's role): sync when a tick's
        worth of local work has piled up, an interrupt is due, or another thread waits for this
        CPU. Keeps local runs bounded without an event per operation."""
        cpu = self.cpu
        if (self.pending >= self.machine.tick_ns or cpu.runq
                or (cpu.irqs and cpu.irqs[0].at <= self.env.now + self.pending)):
            yield from self.sync()

    def deliver_irqs(self) -> Gen:
        """Run every interrupt that has arrived on this CPU, in this thread's context.
        Interrupts do not nest: a handler that enables IRQs (the SPL's refill does, on a
        KM_NOSLEEP allocation from interrupt context) takes no further interrupt until it
        returns."""
        cpu = self.cpu
        m = self.machine
        while True:
            if self.pending:
                yield from self._advance()
            irq = cpu.take_due_irq(self.env.now)
            if irq is None:
                break
            now = self.env.now
            m.irq_latency.record(now - irq.at)
            cpu.irq_count += 1
            was_off = self.irqs_off
            if not was_off:
                self.irqs_off = True
                self.irq_off_start = now
            self.in_irq += 1
            self.charge("irq_entry")
            yield from irq.handler(self)
            self.charge("irq_exit")
            self.in_irq -= 1
            if not was_off:
                self._end_irq_off()
        self._kicked = False

    # --- IRQ state -----------------------------------------------------------------------
    @property
    def irqs_disabled(self) -> bool:
        return self.irqs_off

    def local_irq_disable(self) -> None:
        """local_irq_disable: IRQs off on this CPU (not counted: a second disable is a no-op)."""
        self.charge("irq_disable")
        if not self.irqs_off:
            self.irqs_off = True
            self.irq_off_start = self.env._now + self.pending

    def _end_irq_off(self) -> None:
        self.irqs_off = False
        length = self.env._now + self.pending - self.irq_off_start
        cpu = self.cpu
        cpu.irq_off_total += length
        if length > cpu.irq_off_max:
            cpu.irq_off_max = length
        self._irq_off_hist.record(length)
        if self._tracer is not None:
            self._tracer.span(cpu.id, "irq", "IRQs off", self.irq_off_start, length, self.name)

    def local_irq_enable_fast(self) -> None:
        """local_irq_enable as a plain call, for fast paths that checked `irq_free_for` first:
        no interrupt can be due, so there is nothing to deliver."""
        self.charge("irq_enable")
        if self.irqs_off:
            self._end_irq_off()

    def local_irq_restore_fast(self, was_off: bool) -> None:
        """local_irq_restore as a plain call (see `local_irq_enable_fast`)."""
        if not was_off:
            self.local_irq_enable_fast()

    def local_irq_enable(self) -> Gen:
        """local_irq_enable: IRQs on; interrupts that arrived meanwhile are taken now."""
        self.charge("irq_enable")
        if self.irqs_off:
            self._end_irq_off()
        cpu = self.cpu
        if cpu.irqs and cpu.irqs[0].at <= self.now:
            yield from self.sync()

    def local_irq_save(self) -> bool:
        """local_irq_save: returns the previous state (True = IRQs were off) and disables."""
        was = self.irqs_off
        self.local_irq_disable()
        return was

    def local_irq_restore(self, was_off: bool) -> Gen:
        """local_irq_restore: back to the state `local_irq_save` returned."""
        if not was_off:
            yield from self.local_irq_enable()

    # --- sleeping and the CPU ------------------------------------------------------------
    def _pick_cpu(self) -> CPU:
        cpus = self.machine.cpus
        aff = self.affinity
        if aff is not None and len(aff) == 1:
            return cpus[aff[0]]
        last = self.cpu
        if last is not None and last.current is None and not last.runq and (
                aff is None or last.id in aff):
            return last
        for cid in aff if aff is not None else range(len(cpus)):
            c = cpus[cid]
            if c.current is None and not c.runq:
                return c
        if last is not None and (aff is None or last.id in aff):
            return last
        return cpus[aff[0]] if aff is not None else cpus[0]

    def get_cpu(self) -> Gen:
        """Wait until a CPU this thread may run on is free and take it."""
        cpu = self._pick_cpu()
        if cpu.current is None and not cpu.runq:
            cpu.current = self
            self.cpu = cpu
            self.slice_start = self.env.now
            if self.machine.tracer is not None:
                self.machine.tracer.on_cpu(cpu, self)
            return
        ev = self.env.event()
        cpu.runq.append((self, ev))
        if self.affinity is None or len(self.affinity) > 1:
            self.machine.unpinned_waiting += 1
        self.blocked_on = ("cpu", cpu)
        self.blocked_since = self.env.now
        yield ev
        self.blocked_on = None

    def put_cpu(self) -> None:
        """Give the CPU up and let the next runnable thread have it."""
        cpu = self.cpu
        if cpu.current is self:
            cpu.current = None
            if self.machine.tracer is not None:
                self.machine.tracer.on_cpu(cpu, None)
            cpu.dispatch_next()

    def wakeup_preempt(self) -> Gen:
        """CFS wake-up preemption: a sleeper just woken on this CPU runs before the waker goes
        on (unless the waker cannot be preempted: IRQs off, a spinlock held, or in an
        interrupt handler)."""
        if self.irqs_off or self.preempt_count or self.in_irq:
            return
        yield from self.sync()
        yield self._timeout(0)  # the woken threads reach this CPU's run queue first
        if self.cpu.runq:
            yield from self._preempt()

    def _preempt(self) -> Gen:
        self.machine.metrics.count("sched.preempt")
        ev = self.env.event()
        cpu = self.cpu
        cpu.runq.append((self, ev))
        if self.affinity is None or len(self.affinity) > 1:
            self.machine.unpinned_waiting += 1
        cpu.current = None
        if self.machine.tracer is not None:
            self.machine.tracer.on_cpu(cpu, None)
        cpu.dispatch_next()
        yield ev
        self.charge("context_switch")

    def block(self, event: simpy.Event, what: Any, switch_cost: bool = True,
              timed: bool = False) -> Gen:
        """Sleep until `event` fires, giving the CPU up; returns the event's value.
        `what` names the wait for the deadlock detector; `timed` says the event includes a
        timeout. With `switch_cost` False the caller charges the context switch itself (wait
        queues re-check their condition first)."""
        yield from self.sync()
        if self.irqs_off or self.preempt_count or self.in_irq:
            self.machine.note_sleep_in_atomic(self, what)
        self.blocked_on = what
        self.blocked_since = self.env.now
        self.wait_timed = timed
        self.put_cpu()
        value = yield event
        self.blocked_on = None
        yield from self.get_cpu()
        if switch_cost:
            self.charge("context_switch")
        return value

    def sleep(self, ns: int) -> Gen:
        """schedule_timeout: sleep for `ns` of simulated time, giving the CPU up."""
        yield from self.block(self._timeout(max(0, ns)), ("sleep", ns))

    def _main(self, body: Callable[[Thread], Gen]) -> Gen:
        yield from self.get_cpu()
        yield from body(self)
        yield from self.sync()
        self.alive = False
        self.put_cpu()
