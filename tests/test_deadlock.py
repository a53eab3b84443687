"""The deadlock detector on hand-built waits: AA on a spinlock, ABBA across two locks, a
wait-queue cycle, a taskq whose every worker is stuck, a reclaim dependency, and the negative
cases (a long but progressing wait, a timed-wait cycle that breaks by itself)."""

from __future__ import annotations

import pytest

from simcore import (
    CostTable,
    Machine,
    MachineConfig,
    SimulationDeadlock,
    SpinLock,
    Taskq,
    WaitQueue,
)

MS = 1_000_000


def machine(ncpus: int, **cfg: int) -> Machine:
    return Machine(MachineConfig(nodes=1, cpus_per_node=ncpus, **cfg), costs=CostTable.build({}))


def run_until_deadlock(m: Machine, until: int) -> object:
    with pytest.raises(SimulationDeadlock) as exc:
        m.run(until)
    return exc.value.report


def test_aa_spinlock_from_irq_handler_is_reported_with_both_contexts():
    m = machine(1)
    lock = SpinLock(m, "skc_lock")

    def handler(t):
        yield from lock.lock(t)
        yield from lock.unlock(t)

    def body(t):
        yield from lock.lock(t)
        m.raise_irq(0, handler, "ipi")
        t.charge_ns(5_000)
        yield from t.sync()
        yield from lock.unlock(t)

    m.spawn("holder", body, cpu=0)
    rep = run_until_deadlock(m, 10 * MS)
    assert rep.kind == "self-deadlock"
    assert "skc_lock" in rep.summary
    assert sorted(ts.context for ts in rep.threads) == ["irq", "process context"]
    assert len(rep.cycle) == 2


def test_abba_across_two_locks_is_a_cycle_found_at_the_next_check():
    m = machine(2, deadlock_check=MS)
    a, b = SpinLock(m, "A"), SpinLock(m, "B")

    def t1(t):
        yield from a.lock(t)
        t.charge_ns(1_000)
        yield from b.lock(t)

    def t2(t):
        yield from b.lock(t)
        t.charge_ns(1_000)
        yield from a.lock(t)

    m.spawn("t1", t1, cpu=0)
    m.spawn("t2", t2, cpu=1)
    rep = run_until_deadlock(m, 100 * MS)
    assert rep.kind == "cycle"
    assert sorted(rep.cycle) == ["t1", "t2"]
    # both waits start at 1 us; the 1 ms check sees the cycle, the 2 ms check confirms it
    assert rep.time == 2 * MS
    by_name = {ts.name: ts for ts in rep.threads}
    assert by_name["t1"].holds == ["A"] and by_name["t1"].waits_on == "SpinLock B"
    assert by_name["t2"].holds == ["B"] and by_name["t2"].waits_on == "SpinLock A"
    text = rep.text()
    assert "cycle: t1 -> t2 -> t1" in text or "cycle: t2 -> t1 -> t2" in text


def test_wait_queue_cycle_through_registered_wakers():
    m = machine(2, deadlock_check=MS)
    q1, q2 = WaitQueue(m, "q1"), WaitQueue(m, "q2")
    done = {"a": False, "b": False}

    def ta(t):
        yield from q1.wait_event(t, lambda: done["b"])
        done["a"] = True
        yield from q2.wake_up_all(t)

    def tb(t):
        yield from q2.wait_event(t, lambda: done["a"])
        done["b"] = True
        yield from q1.wake_up_all(t)

    a = m.spawn("a", ta, cpu=0)
    b = m.spawn("b", tb, cpu=1)
    q1.wakers.append(b)
    q2.wakers.append(a)
    rep = run_until_deadlock(m, 100 * MS)
    assert rep.kind == "cycle" and sorted(rep.cycle) == ["a", "b"]


def test_queued_task_waits_for_every_stuck_worker():
    """A waiter expects a task that is still queued because the taskq's only worker is itself
    stuck waiting for that waiter: the edge goes to the busy worker."""
    m = machine(2, deadlock_check=MS)
    tq = Taskq(m, "spl_kmem_cache", nthreads=1)
    wq = WaitQueue(m, "grow")
    release = WaitQueue(m, "release")
    state = {"released": False, "grown": False}

    def stuck_task(w):
        yield from release.wait_event(w, lambda: state["released"])

    def grow_task(w):
        state["grown"] = True
        yield from wq.wake_up_all(w)

    def user(t):
        yield from tq.dispatch(t, stuck_task)
        tid = yield from tq.dispatch(t, grow_task)
        wq.wakers.append(tq.tasks[tid])
        yield from wq.wait_event(t, lambda: state["grown"])
        state["released"] = True

    release.wakers.append(m.spawn("user", user, cpu=0))
    rep = run_until_deadlock(m, 100 * MS)
    assert rep.kind == "cycle"
    assert sorted(rep.cycle) == ["spl_kmem_cache/0", "user"]


def test_long_but_progressing_spin_is_not_a_deadlock():
    """t2 spins 30 ms behind t1, which holds the lock while working: 30 checks see the wait, the
    waited-for thread is running, and nothing is reported."""
    m = machine(2, deadlock_check=MS)
    lock = SpinLock(m, "L")
    got: list[int] = []

    def t1(t):
        yield from lock.lock(t)
        for _ in range(30):
            t.charge_ns(MS)
            yield from t.sync()
        yield from lock.unlock(t)

    def t2(t):
        t.charge_ns(10)
        yield from lock.lock(t)
        got.append(t.env.now)
        yield from lock.unlock(t)

    m.spawn("t1", t1, cpu=0)
    m.spawn("t2", t2, cpu=1)
    m.run(100 * MS)
    assert m.deadlock.report is None
    assert got and got[0] >= 30 * MS


def test_timed_wait_cycle_that_breaks_by_itself_is_not_a_deadlock():
    """Each thread waits for the other with wait_event_timeout (10 ms); the cycle is real for
    10 ms and then both time out and finish. Only a cycle of timed waits that lasts
    deadlock_timed_limit is reported."""
    m = machine(2, deadlock_check=MS, deadlock_timed_limit=50 * MS)
    q1, q2 = WaitQueue(m, "q1"), WaitQueue(m, "q2")
    ends: list[int] = []

    def waiter(q):
        def body(t):
            yield from q.wait_event_timeout(t, lambda: False, 10 * MS)
            ends.append(t.env.now)
        return body

    a = m.spawn("a", waiter(q1), cpu=0)
    b = m.spawn("b", waiter(q2), cpu=1)
    q1.wakers.append(b)
    q2.wakers.append(a)
    m.run(100 * MS)
    assert m.deadlock.report is None
    assert len(ends) == 2


def test_timed_wait_cycle_without_progress_is_reported_after_the_limit():
    """The same cycle retried forever (as the SPL's growth wait loops on HZ/10 timeouts) is a
    deadlock once no thread in it has progressed for deadlock_timed_limit."""
    m = machine(2, deadlock_check=MS, deadlock_timed_limit=50 * MS)
    q1, q2 = WaitQueue(m, "q1"), WaitQueue(m, "q2")

    def waiter(q):
        def body(t):
            t.stalled_since = t.now
            while True:
                yield from q.wait_event_timeout(t, lambda: False, 10 * MS)
        return body

    a = m.spawn("a", waiter(q1), cpu=0)
    b = m.spawn("b", waiter(q2), cpu=1)
    q1.wakers.append(b)
    q2.wakers.append(a)
    rep = run_until_deadlock(m, 500 * MS)
    assert rep.kind == "cycle"
    assert rep.time == 50 * MS
    assert all(ts.since == 0 for ts in rep.threads)


def test_reclaim_dependency_edge():
    """A thread in direct reclaim waits for the writeback thread (its modelled dependency); the
    writeback thread waits on a queue only the reclaimer would wake."""
    m = machine(2, deadlock_check=MS)
    wq = WaitQueue(m, "writeback_needs_object")
    done = m.env.event()

    def writeback(t):
        yield from wq.wait_event(t, lambda: False)

    wb = m.spawn("writeback", writeback, cpu=1)

    def reclaim_dep(t):
        t.waits_for = [wb]
        yield from t.block(done, ("reclaim", "writeback"))

    def reclaimer(t):
        yield from reclaim_dep(t)

    r = m.spawn("kworker", reclaimer, cpu=0)
    wq.wakers.append(r)
    rep = run_until_deadlock(m, 100 * MS)
    assert rep.kind == "cycle" and sorted(rep.cycle) == ["kworker", "writeback"]
    waits = {ts.name: ts.waits_on for ts in rep.threads}
    assert waits["kworker"] == "reclaim:writeback"


def test_hung_task_watchdog_reports_a_thread_without_progress():
    m = machine(1, hung_task_timeout=20 * MS, deadlock_check=0)
    never = m.env.event()

    def sleeper(t):
        yield from t.block(never, ("event", "never"))

    m.spawn("sleeper", sleeper, cpu=0)
    rep = run_until_deadlock(m, 100 * MS)
    assert rep.kind == "hung-task"
    assert rep.threads[0].name == "sleeper"
    assert 20 * MS <= rep.time <= 25 * MS
