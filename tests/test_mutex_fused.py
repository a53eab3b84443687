"""AdaptiveMutex's fused mutex_tryenter-then-enter (`tryenter_or_enter`) and its event-free
arrivals (`quiet_arrivals`). The quiet arrivals are exact: random operation sequences on a
few CPUs give the same acquisitions, at the same times, with the same statistics, as when
every arrival is synchronised by its own clock-step event. A failed try is the waiter's
arrival at the try's instant (docs/simcore.md), which directed tests pin down."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from simcore import AdaptiveMutex, CostTable, Machine, MachineConfig, Mutex


class _GeneralMutex(AdaptiveMutex):
    """An AdaptiveMutex whose waiters always synchronise before they queue."""

    quiet_arrivals = False


class _GeneralLinuxMutex(Mutex):
    quiet_arrivals = False


_op = st.tuples(
    st.integers(0, 400),                       # local work before the acquire (ns)
    st.sampled_from(["lock", "try"]),          # mutex_enter, or mutex_tryenter then enter
    st.integers(0, 400),                       # work while holding it (ns)
    st.sampled_from([0, 0, 0, 0, 3_000]),      # a sleep while holding it (the owner leaves)
)
_threads = st.lists(st.lists(_op, min_size=1, max_size=8), min_size=2, max_size=5)

_STAT = ("acquisitions", "contentions", "con_bounces", "acq_bounces", "spins", "spin_total",
         "blocks", "block_total", "waittime_min", "waittime_max", "waittime_total",
         "holdtime_min", "holdtime_max", "holdtime_total")


def _run(kind: type, fused: bool, plan: list[list[tuple[int, str, int, int]]],
         linux: bool) -> dict[str, Any]:
    """Run `plan` (one op list per CPU) on a fresh machine; what an observer can see."""
    m = Machine(MachineConfig(nodes=1, cpus_per_node=len(plan)), costs=CostTable.build({}))
    lock = kind(m, "L")
    seen: list[tuple[str, int, int, bool]] = []
    ends: dict[str, int] = {}

    def body(ops: list[tuple[int, str, int, int]]) -> Any:
        def run(t: Any) -> Any:
            for i, (pre, how, hold, nap) in enumerate(ops):
                t.charge_ns(pre)
                if how == "try" and fused:
                    failed = yield from lock.tryenter_or_enter(t)
                elif how == "try":
                    failed = not (yield from lock.trylock(t))
                    if failed:
                        yield from lock.lock(t)
                else:
                    yield from lock.lock(t)
                    failed = False
                seen.append((t.name, i, t.now, failed))
                t.charge_ns(hold)
                if nap:
                    yield from t.sleep(nap)
                yield from lock.unlock(t)
            ends[t.name] = t.now
        return run

    for cpu, ops in enumerate(plan):
        m.spawn(f"t{cpu}", body(ops), cpu=cpu)
    m.run(10**9)
    stat = {k: getattr(lock.stat, k) for k in _STAT}
    return {"seen": sorted(seen), "ends": ends, "stat": stat,
            "busy": [c.busy_ns for c in m.cpus], "free_at": lock.free_at,
            "kind": "linux" if linux else "illumos"}


@settings(max_examples=150, deadline=None)
@given(_threads)
def test_quiet_arrivals_of_mutex_enter_and_failed_tryenter_are_exact(plan):
    got = _run(AdaptiveMutex, True, plan, False)
    assert got == _run(_GeneralMutex, True, plan, False)
    # every op completed once (a failed try may still find the mutex free when it enters)
    assert len(got["seen"]) == sum(len(ops) for ops in plan)
    assert got["stat"]["acquisitions"] == len(got["seen"]) >= got["stat"]["contentions"]
    # a try that fails is a waiter at once: each counts one contention, as each mutex_enter
    # that finds the mutex taken does
    failed = sum(1 for _name, _i, _at, f in got["seen"] if f)
    assert failed <= got["stat"]["contentions"]
    if all(op[1] == "try" for ops in plan for op in ops):
        assert failed == got["stat"]["contentions"]


@settings(max_examples=60, deadline=None)
@given(_threads)
def test_linux_mutex_quiet_arrivals_match_the_general_path(plan):
    plan = [[(pre, "lock", hold, nap) for pre, _how, hold, nap in ops] for ops in plan]
    assert _run(Mutex, False, plan, True) == _run(_GeneralLinuxMutex, False, plan, True)


def _holder(lock: AdaptiveMutex) -> Any:
    """A thread that takes the free mutex at 0 and releases it after 1000 ns of work."""
    def run(t: Any) -> Any:
        yield from lock.lock(t)
        t.charge_ns(1_000)
        yield from t.sync()
        yield from lock.unlock(t)
    return run


def test_a_failed_tryenter_waits_for_the_release_and_reports_the_contention():
    # CPU0 takes the free mutex at 0 (lock_acquire 20) and releases it after 1000 ns of work,
    # at 1020; CPU1 tries at 50, fails (an atomic_op), queues and spins: it gets the mutex at
    # the release plus the line transfer, with its spin check on its clock, and
    # tryenter_or_enter says the try failed (the caller's contention count)
    m = Machine(MachineConfig(nodes=1, cpus_per_node=2), costs=CostTable.build({}))
    lock = AdaptiveMutex(m, "L")
    got: dict[str, Any] = {}

    def waiter(t):
        t.charge_ns(50)
        got["failed"] = yield from lock.tryenter_or_enter(t)
        got["at"] = t.now
        yield from lock.unlock(t)
        got["free"] = yield from lock.tryenter_or_enter(t)

    m.spawn("holder", _holder(lock), cpu=0)
    m.spawn("waiter", waiter, cpu=1)
    m.run(10**8)
    c = m.costs
    assert got["failed"] is True and got["free"] is False
    assert got["at"] == (c["lock_acquire"] + 1_000 + c["cacheline_transfer"]
                         + c["mutex_spin_check"])
    assert (lock.stat.acquisitions, lock.stat.contentions) == (3, 1)


def test_a_failed_tryenter_queues_at_the_instant_of_the_try():
    # CPU0 holds the mutex from 0 to 1020. CPU1 tries at 50 and fails; CPU2 calls
    # mutex_enter at 60, before the try's atomic_op (20 ns) has ended on CPU1's clock. The
    # failed try is CPU1's arrival at 50, so CPU1 is first in the queue and gets the mutex
    # at the release; CPU2 gets it after CPU1 has released it
    m = Machine(MachineConfig(nodes=1, cpus_per_node=3), costs=CostTable.build({}))
    lock = AdaptiveMutex(m, "L")
    order: list[str] = []

    def trier(t):
        t.charge_ns(50)
        assert (yield from lock.tryenter_or_enter(t)) is True
        order.append(t.name)
        yield from lock.unlock(t)

    def enterer(t):
        t.charge_ns(60)
        yield from lock.lock(t)
        order.append(t.name)
        yield from lock.unlock(t)

    m.spawn("holder", _holder(lock), cpu=0)
    m.spawn("trier", trier, cpu=1)
    m.spawn("enterer", enterer, cpu=2)
    m.run(10**8)
    assert order == ["trier", "enterer"]
    assert (lock.stat.acquisitions, lock.stat.contentions) == (3, 2)


_irqs = st.lists(st.tuples(st.integers(0, 6_000), st.integers(0, 4)), max_size=12)


def _run_with_irqs(batching: bool, plan: list[list[tuple[int, str, int, int]]],
                   irqs: list[tuple[int, int]]) -> dict[str, Any]:
    """`_run`'s observer on a machine where interrupts are raised while it runs: each (at,
    cpu) is scheduled at `at` for 40 ns later, so that it can reach a waiter spinning on
    the mutex (an IRQs-on spin is interrupted) or a thread at its clock step."""
    ncpu = len(plan)
    m = Machine(MachineConfig(nodes=1, cpus_per_node=ncpu, batching=batching),
                costs=CostTable.build({}))
    lock = AdaptiveMutex(m, "L")
    seen: list[tuple[str, int, int, bool]] = []
    handled: list[tuple[int, int]] = []

    def handler(t: Any) -> Any:
        handled.append((t.cpu.id, t.now))
        t.charge_ns(150)
        yield from t.sync()

    def body(ops: list[tuple[int, str, int, int]]) -> Any:
        def run(t: Any) -> Any:
            for i, (pre, how, hold, nap) in enumerate(ops):
                t.charge_ns(pre)
                if how == "try":
                    failed = yield from lock.tryenter_or_enter(t)
                else:
                    yield from lock.lock(t)
                    failed = False
                seen.append((t.name, i, t.now, failed))
                t.charge_ns(hold)
                if nap:
                    yield from t.sleep(nap)
                yield from lock.unlock(t)
        return run

    def source() -> Any:
        for at, cpu in sorted(irqs):
            if at > m.env.now:
                yield m.env.timeout(at - m.env.now)
            m.cpus[cpu % ncpu].schedule_irq(m.env.now + 40, handler, "test")

    for cpu, ops in enumerate(plan):
        m.spawn(f"t{cpu}", body(ops), cpu=cpu)
    m.env.process(source())
    m.run(10**9)
    stat = {k: getattr(lock.stat, k) for k in _STAT}
    return {"seen": sorted(seen), "handled": sorted(handled), "stat": stat,
            "busy": [c.busy_ns for c in m.cpus], "free_at": lock.free_at}


@settings(max_examples=120, deadline=None)
@given(_threads, _irqs)
def test_arrivals_queued_by_their_clock_step_match_unbatched_runs(plan, irqs):
    # on a batched clock a waiter's arrival is the first callback of its clock step
    # (`_arrive_mutex`), which queues it and starts its spin; unbatched runs (one event per
    # step) go through the generator path. Interrupts in the spin, owners that sleep with
    # the mutex held (the spinners block) and tries that fail give the same result.
    got = _run_with_irqs(True, plan, irqs)
    assert got == _run_with_irqs(False, plan, irqs)
    assert len(got["seen"]) == sum(len(ops) for ops in plan)
    assert len(got["handled"]) == len(irqs)
