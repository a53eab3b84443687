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
from collections.abc import Callable, Generator
from typing import Any

import simpy

from simcore.sched import FAIR, SchedEntity, wakeup_preempts

Gen = Generator[Any, Any, Any]
IrqHandler = Callable[["Thread"], Gen]


class Wake(simpy.Event):
    """A thread's wake-up after local work (`Thread._timeout`): an event that always
    succeeds with None, made without Event.__init__ (`new_event`; the class gives `_ok` and
    `_value`, the maker sets `env` and `callbacks`)."""

    _ok = True
    _value = None


new_event = object.__new__
"""Make an event without calling its __init__ (the caller sets what Event.__init__ would)."""


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

    def __init__(self, machine: Any, cpu_id: int, node: int) -> None:
        self.machine = machine
        self.id = cpu_id
        """Logical CPU number (smp_processor_id)."""
        self.node = node
        """NUMA node of this CPU."""
        self.current: Thread | None = None
        """Thread running on the CPU, None when idle."""
        self.runq: list[tuple[Thread, simpy.Event]] = []
        """Runnable threads waiting for this CPU, in enqueue order (`pick` chooses)."""
        self.min_vruntime = 0
        """cfs_rq min_vruntime: never decreases; sleepers are placed relative to it."""
        self.need_resched = False
        """TIF_NEED_RESCHED of the running thread, set by a wake-up that preempts it."""
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
    def irq_off_sections(self, length: int, n: int) -> None:
        """Record `n` IRQ-off sections of the same `length` on this CPU at once: the counted
        fast-path hits `Metrics.fold` brings in (never while tracing, where every section is a
        span of its own)."""
        if n:
            self.irq_off_total += length * n
            if length > self.irq_off_max:
                self.irq_off_max = length
            self.machine.irq_off.record(length, n)

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
    def pick(self) -> int:
        """pick_next_task: index in `runq` of the thread to run next: highest class, then
        highest SYS/RT priority (FIFO among equals), then lowest vruntime (FIFO among equals)."""
        q = self.runq
        best = 0
        if len(q) > 1:
            bk = q[0][0].se.key()
            for i in range(1, len(q)):
                k = q[i][0].se.key()
                if k < bk:
                    best, bk = i, k
        return best

    def dispatch_next(self) -> None:
        """Give the idle CPU to the next runnable thread (own queue first, then steal)."""
        if self.current is not None:
            return
        if self.runq:
            t, ev = self.runq.pop(self.pick())
            if t.affinity is None or len(t.affinity) > 1:
                self.machine.unpinned_waiting -= 1
        else:
            found = self.machine.steal_runnable(self)
            if found is None:
                if self.irqs and self.irqs[0].at <= self.machine.env.now:
                    self._irq_arrives(self.irqs[0])
                return
            t, ev = found
            t.migrate_to(self)
        self.current = t
        self.need_resched = False
        t.cpu = self
        t.slice_start = self.machine.env.now
        se = t.se
        if se.cls == FAIR and se.vruntime > self.min_vruntime:
            self.min_vruntime = se.vruntime
        if self.machine.tracer is not None:
            self.machine.tracer.on_cpu(self, t)
        ev.succeed()


class Thread:
    """A simulated kernel thread: workload thread, taskq worker, reaper, or IRQ context.

    Its attributes are slots, those a lock round trip reads first, so that a thread's state
    is one compact block (a 1024-CPU run touches a thousand of them in turn); policies keep
    their own per-thread marks (spl_slept, slab_grew, ...) in its `__dict__`."""

    __slots__ = ("env", "cpu", "pending", "_batched", "irqs_off", "irq_off_start", "in_irq",
                 "preempt_count", "held", "spinning", "blocked_on", "blocked_since",
                 "wait_timed", "_prio", "_tracer", "_irq_off_tally", "stalled_since",
                 "_steps", "_costs", "machine", "name", "affinity", "mutex_stop", "_kicked",
                 "slice_start", "se", "memalloc_noio", "alive", "process", "__dict__")

    def __init__(self, machine: Any, name: str, body: Callable[[Thread], Gen] | None,
                 cpu: CPU | None = None, affinity: list[int] | None = None,
                 se: SchedEntity | None = None) -> None:
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
        self._irq_off_tally = machine.irq_off.tally
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
        self.mutex_stop = False
        """A mutex's owner left its CPU while this thread spun on it: block instead."""
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
        """When the thread last got its CPU (exec_start: the slice and vruntime run from it)."""
        self.se = se if se is not None else SchedEntity()
        """Scheduling class, priority, weight and vruntime."""
        self.memalloc_noio = False
        """PF_MEMALLOC_NOIO (the SPL's fstrans mark): reclaim on behalf of this thread does no
        I/O and does not enter the file system, whatever the allocation's flags."""
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
        env = self.env
        ev = new_event(Wake)
        ev.env = env
        ev.callbacks = []
        heapq.heappush(env._queue, (env._now + ns, self._prio, next(env._eid), ev))  # schedule
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
        self.pending -= p  # a charge made meanwhile (a lock taken for this thread) stays

    def sync(self) -> Gen:
        """Bring the simulation clock up to this thread's time and take due interrupts if IRQs
        are on. Under full preemption (CONFIG_PREEMPT) this is also a preemption point: the
        thread gives its CPU up when a wake-up asked for it or its slice is used up, unless it
        holds a spinlock, has IRQs off or runs an interrupt handler."""
        p = self.pending
        if p:
            self.cpu.busy_ns += p
            if self._batched:
                env = self.env  # yield self._timeout(p), inlined
                ev = new_event(Wake)
                ev.env = env
                ev.callbacks = []
                heapq.heappush(env._queue, (env._now + p, self._prio, next(env._eid), ev))
                yield ev
            else:
                steps, self._steps = self._steps, []
                for ns in steps:
                    yield self._timeout(ns)
            self.pending -= p  # what was charged meanwhile stays (see `_advance`)
        cpu = self.cpu
        if (not self.irqs_off and not self.in_irq and cpu.irqs
                and cpu.irqs[0].at <= self.env.now):
            yield from self.deliver_irqs()
        if (cpu.runq and self.machine.preempt_full and not self.preempt_count
                and not self.irqs_off and not self.in_irq and self._resched_due()):
            yield from self._preempt()

    def _resched_due(self) -> bool:
        """need_resched: a wake-up asked for the CPU, or the scheduler tick found a fair thread
        past its slice (check_preempt_tick) while others wait. SYS and RT threads are not
        time-sliced."""
        if self.cpu.need_resched:
            return True
        return (self.se.cls == FAIR
                and self.env.now - self.slice_start >= self.machine.sched_slice)

    def cond_resched(self) -> Gen:
        """cond_resched: a voluntary preemption point (kernel code that may run long calls it;
        a no-op under full preemption, where every sync is a preemption point)."""
        cpu = self.cpu
        if cpu.runq and not self.preempt_count and not self.irqs_off and not self.in_irq:
            yield from self.sync()
            if cpu.runq and self._resched_due():
                yield from self._preempt()

    def might_resched(self) -> Gen:
        """might_sleep under CONFIG_PREEMPT_VOLUNTARY: a preemption point in voluntary mode
        only (mutex_lock, and the other calls that may sleep)."""
        if self.machine.preempt_voluntary and self.cpu.runq:
            yield from self.cond_resched()

    def irq_free_for(self, ns: int) -> bool:
        """True when no interrupt arrives on this CPU within the next `ns` of local time, so a
        fast path that enables IRQs at its end will not have to deliver one."""
        irqs = self.cpu.irqs
        return not irqs or irqs[0].at > self.env.now + self.pending + ns

    def checkpoint(self) -> Gen:
        """A scheduling point between operations (the return to user space): sync when a
        tick's worth of local work has piled up, an interrupt is due, or another thread waits
        for this CPU, and give the CPU up when the scheduler asks for it (a preempting wake-up
        or the tick past the slice), whatever the preemption model. Keeps local runs bounded
        without an event per operation."""
        cpu = self.cpu
        if (self.pending >= self.machine.tick_ns or cpu.runq
                or (cpu.irqs and cpu.irqs[0].at <= self.env.now + self.pending)):
            yield from self.sync()
            if (cpu.runq and not self.preempt_count and not self.irqs_off and not self.in_irq
                    and self._resched_due()):
                yield from self._preempt()

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
        """IRQs back on: record the section that ends now (`irq_off_section`)."""
        self.irqs_off = False
        start = self.irq_off_start
        self.irq_off_section(start, self.env._now + self.pending - start)

    def irq_off_section(self, start: int, length: int) -> None:
        """Record one IRQ-off section (per-CPU total and maximum, the histogram, the trace).
        A fast path whose section has a constant length (local_irq_disable, a magazine pop,
        local_irq_enable with no interrupt due) records it here in one call instead of
        setting and clearing the IRQ state."""
        cpu = self.cpu
        cpu.irq_off_total += length
        if length > cpu.irq_off_max:
            cpu.irq_off_max = length
        self._irq_off_tally[length] += 1
        if self._tracer is not None:
            self._tracer.span(cpu.id, "irq", "IRQs off", start, length, self.name)

    def local_irq_enable_fast(self) -> None:
        """local_irq_enable as a plain call, for fast paths that checked `irq_free_for` first:
        no interrupt can be due, so there is nothing to deliver."""
        ns = self._costs["irq_enable"]
        self.pending += ns  # charge, inlined
        if not self._batched and ns:
            self._steps.append(ns)
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
        """local_irq_save: returns the previous state (True = IRQs were off) and disables
        (`local_irq_disable`, inlined)."""
        was = self.irqs_off
        ns = self._costs["irq_disable"]
        self.pending += ns
        if not self._batched and ns:
            self._steps.append(ns)
        if not was:
            self.irqs_off = True
            self.irq_off_start = self.env._now + self.pending
        return was

    def local_irq_restore(self, was_off: bool) -> Gen:
        """local_irq_restore: back to the state `local_irq_save` returned."""
        if not was_off:
            yield from self.local_irq_enable()

    # --- sleeping and the CPU ------------------------------------------------------------
    def _pick_cpu(self) -> CPU:
        """select_task_rq: the CPU the thread last ran on if it is idle, else an idle CPU it
        may run on, else its last CPU (where it queues)."""
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

    def migrate_to(self, cpu: CPU) -> None:
        """migrate_task_rq_fair: keep the vruntime's lag relative to the CPU's min_vruntime."""
        last = self.cpu
        if last is not None and last is not cpu and self.se.cls == FAIR:
            self.se.vruntime += cpu.min_vruntime - last.min_vruntime

    def get_cpu(self, woken: bool = False) -> Gen:
        """Take a CPU this thread may run on, or queue for it. A woken thread (`woken`) is
        placed as place_entity places a sleeper (at most latency/2 of credit below the CPU's
        min_vruntime); on an idle CPU it first pays `wakeup_ipi` (the reschedule IPI and the
        exit from idle), charged to its local clock; on a busy CPU it queues and, by the
        wake-up preemption rule, may set need_resched on the running thread."""
        cpu = self._pick_cpu()
        se = self.se
        if se.cls == FAIR:
            self.migrate_to(cpu)
            if woken:
                floor = cpu.min_vruntime - self.machine.sched_latency // 2
                if se.vruntime < floor:
                    se.vruntime = floor
        if cpu.current is None and not cpu.runq:
            cpu.current = self
            cpu.need_resched = False
            self.cpu = cpu
            self.slice_start = self.env.now
            if se.cls == FAIR and se.vruntime > cpu.min_vruntime:
                cpu.min_vruntime = se.vruntime
            if woken:
                self.charge("wakeup_ipi")
            if self.machine.tracer is not None:
                self.machine.tracer.on_cpu(cpu, self)
            return
        ev = self.env.event()
        cpu.runq.append((self, ev))
        if self.affinity is None or len(self.affinity) > 1:
            self.machine.unpinned_waiting += 1
        cur = cpu.current
        if woken and cur is not None and cur is not cpu.idle_thread and not cpu.need_resched:
            if wakeup_preempts(cur.se, cur.curr_vruntime(), se,
                               self.machine.sched_wakeup_granularity):
                cpu.need_resched = True
                self.machine.metrics.count("sched.wakeup_preempt")
        self.blocked_on = ("cpu", cpu)
        self.blocked_since = self.env.now
        yield ev
        self.blocked_on = None

    def curr_vruntime(self) -> int:
        """The running thread's vruntime brought up to the simulation clock (update_curr)."""
        se = self.se
        d = self.env.now - self.slice_start
        return se.vruntime + (d if se.weight == 1024 else d * 1024 // se.weight)

    def _account(self) -> None:
        """update_curr at a switch: charge the time since the thread got its CPU."""
        now = self.env.now
        self.se.account(now - self.slice_start)
        self.slice_start = now

    def put_cpu(self) -> None:
        """Give the CPU up and let the next runnable thread have it."""
        cpu = self.cpu
        if cpu.current is self:
            self._account()
            se = self.se
            if se.cls == FAIR and se.vruntime > cpu.min_vruntime and not cpu.runq:
                cpu.min_vruntime = se.vruntime
            cpu.current = None
            for lk in self.held:
                off = getattr(lk, "owner_off_cpu", None)
                if off is not None:
                    off(self)
            if self.machine.tracer is not None:
                self.machine.tracer.on_cpu(cpu, None)
            cpu.dispatch_next()

    def wakeup_preempt(self) -> Gen:
        """The preemption point after a wake-up (the wait-queue lock's spin_unlock_irqrestore):
        under full preemption a woken thread that the wake-up preemption rule lets preempt
        this one runs before the waker goes on; under voluntary and none preemption the waker
        goes on to its next preemption point."""
        if not self.machine.preempt_full or self.irqs_off or self.preempt_count or self.in_irq:
            return
        yield from self.sync()
        yield self._timeout(0)  # the woken threads reach their run queues first
        if self.cpu.runq and self.cpu.need_resched:
            yield from self._preempt()

    def _preempt(self) -> Gen:
        cpu = self.cpu
        self._account()
        best = cpu.runq[cpu.pick()][0]
        if best.se.key() >= self.se.key() and not cpu.need_resched:
            return  # the tick found nobody the scheduler would pick over this thread
        self.machine.metrics.count("sched.preempt")
        ev = self.env.event()
        cpu.runq.append((self, ev))
        if self.affinity is None or len(self.affinity) > 1:
            self.machine.unpinned_waiting += 1
        cpu.current = None
        for lk in self.held:
            off = getattr(lk, "owner_off_cpu", None)
            if off is not None:
                off(self)
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
        yield from self.get_cpu(woken=True)
        if switch_cost:
            self.charge("context_switch")
        return value

    def sleep(self, ns: int) -> Gen:
        """schedule_timeout: sleep for `ns` of simulated time, giving the CPU up. The timeout
        is armed from the simulation clock before `block` brings the clock up to the thread's
        time, so a thread with charged work wakes `pending` ns early (a known inaccuracy:
        correcting it moves irq-aging-lockup's compressed race out of its run; callers that
        need the exact time sync first)."""
        yield from self.block(self._timeout(max(0, ns)), ("sleep", ns))

    def _main(self, body: Callable[[Thread], Gen]) -> Gen:
        yield from self.get_cpu()
        yield from body(self)
        yield from self.sync()
        self.alive = False
        self.put_cpu()
