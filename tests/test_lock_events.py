"""SimPy events per uncontended lock round trip (issue 17, acceptance 3): the acquire
synchronises the CPU with the simulation clock once; the release takes effect at the holder's
local time without a second event. Contended hand-over times stay those of the FIFO rule."""

from __future__ import annotations

import pytest

from simcore import AdaptiveMutex, CostTable, Machine, MachineConfig, Mutex, SpinLock

N = 200


def machine(ncpus: int) -> Machine:
    return Machine(MachineConfig(nodes=1, cpus_per_node=ncpus), costs=CostTable.build({}))


def _events_for_pairs(kind: type, how: str, n: int) -> tuple[int, int]:
    """SimPy events created while one thread does `n` lock/unlock pairs with local work before
    and inside each (so every acquire has pending work to synchronise), and the lock's
    acquisitions."""
    m = machine(2)
    lock = kind(m, "L")
    counted: list[int] = []

    def body(t):
        e0 = next(m.env._eid)
        for _ in range(n):
            t.charge_ns(50)
            if how == "trylock":
                got = yield from lock.trylock(t)
                assert got
            elif how == "irqsave":
                flags = yield from lock.lock_irqsave(t)
            else:
                yield from lock.lock(t)
            t.charge_ns(100)
            if how == "irqsave":
                yield from lock.unlock_irqrestore(t, flags)
            else:
                yield from lock.unlock(t)
        counted.append(next(m.env._eid) - e0 - 1)

    m.spawn("t", body, cpu=0)
    m.run(10**9)
    return counted[0], lock.stat.acquisitions


@pytest.mark.parametrize("kind,how", [
    (SpinLock, "lock"), (SpinLock, "irqsave"), (SpinLock, "trylock"),
    (AdaptiveMutex, "lock"), (AdaptiveMutex, "trylock"), (Mutex, "lock"),
])
def test_n_uncontended_round_trips_cost_at_most_n_events(kind, how):
    # the difference between 2N and N pairs leaves out the machine's own start-up events
    events_n, acq_n = _events_for_pairs(kind, how, N)
    events_2n, acq_2n = _events_for_pairs(kind, how, 2 * N)
    assert (acq_n, acq_2n) == (N, 2 * N)
    assert events_2n - events_n <= N


def test_release_without_sync_still_hands_over_at_the_holders_release_time():
    # lock_acquire 20, lock_release 10, cacheline_transfer 100 (defaults). CPU0 takes the free
    # lock at t=0 (no pending work: no event), holds 20 + 500 and releases at local time 520
    # while the clock is still at 0. CPU1 asks at 30: it spins until 520 and gets the lock
    # with one line transfer, 520 + 100 = 620 on its clock.
    m = machine(2)
    lock = SpinLock(m, "L")
    got: list[tuple[str, int]] = []

    def holder(t):
        yield from lock.lock(t)
        t.charge_ns(500)
        yield from lock.unlock(t)

    def waiter(t):
        t.charge_ns(30)
        yield from lock.lock(t)
        got.append(("waiter", t.now))
        yield from lock.unlock(t)

    m.spawn("holder", holder, cpu=0)
    m.spawn("waiter", waiter, cpu=1)
    m.run(10_000)
    assert got == [("waiter", 620)]
    s = lock.stat
    assert (s.acquisitions, s.contentions) == (2, 1)
    assert s.holdtime_max == 520
    assert s.waittime_max == 520 - 30 + 100


def test_a_lock_used_in_irq_context_takes_the_ipi_inside_the_hold():
    # another CPU's event falls inside the hold, so the holder (IRQs on) synchronises before
    # releasing: the IPI raised during the hold runs inside it, and a handler that asks for
    # the held lock is a self-deadlock, as on the hardware.
    from simcore import SimulationDeadlock

    m = machine(2)
    lock = SpinLock(m, "L")

    def handler(t):
        yield from lock.lock(t)
        yield from lock.unlock(t)

    def holder(t):
        t.charge_ns(1000)  # the first IPI (at 500) arrives before the first hold
        yield from t.sync()
        yield from lock.lock(t)
        t.charge_ns(5000)
        yield from lock.unlock(t)

    def sender(t):
        t.charge_ns(500)
        yield from t.sync()
        m.raise_irq(0, handler, "ipi")
        t.charge_ns(2000)  # the second IPI (at 2500) arrives inside the hold
        yield from t.sync()
        m.raise_irq(0, handler, "ipi")

    m.spawn("holder", holder, cpu=0)
    m.spawn("sender", sender, cpu=1)
    with pytest.raises(SimulationDeadlock):
        m.run(100_000)


def _irqsave_arrivals(batching: bool) -> tuple[list[tuple[str, int]], tuple[int, ...], int]:
    """A holder and three waiters taking one lock with IRQs saved. The waiters' local work
    makes them reach the lock in another order than the one in which the simulation runs
    them: `late` runs last (at 120) but arrives first (at 300), `early` runs first (at 50)
    and arrives last (at 650). Returns who got the lock when, the lock_stat columns and the
    events the run took."""
    m = Machine(MachineConfig(nodes=1, cpus_per_node=4, batching=batching),
                costs=CostTable.build({}))
    lock = SpinLock(m, "L")
    got: list[tuple[str, int]] = []

    def holder(t):
        flags = yield from lock.lock_irqsave(t)
        t.charge_ns(1000)
        yield from lock.unlock_irqrestore(t, flags)

    def waiter(name, first, then):
        def body(t):
            t.charge_ns(first)
            yield from t.sync()
            t.charge_ns(then)
            flags = yield from lock.lock_irqsave(t)
            got.append((name, t.now))
            t.charge_ns(200)
            yield from lock.unlock_irqrestore(t, flags)
        return body

    m.spawn("holder", holder, cpu=0)
    m.spawn("early", waiter("early", 50, 300 + 150 + 150), cpu=1)
    m.spawn("middle", waiter("middle", 80, 240 + 100 + 100), cpu=2)
    m.spawn("late", waiter("late", 120, 180), cpu=3)
    e0 = next(m.env._eid)
    m.run(100_000)
    s = lock.stat
    return got, (s.acquisitions, s.contentions, s.con_bounces, s.acq_bounces, s.waittime_min,
                 s.waittime_max, s.waittime_total, s.holdtime_total), next(m.env._eid) - e0


def test_contended_irqsave_arrivals_queue_by_simulated_arrival_time():
    # batched, a contended arrival with IRQs off queues in its synchronisation's wake-up
    # (no resume); one event per step takes the generator path: same order, same statistics
    got, stat, _events = _irqsave_arrivals(batching=True)
    assert [name for name, _at in got] == ["late", "middle", "early"]
    assert stat[:2] == (4, 3)
    assert _irqsave_arrivals(batching=False)[:2] == (got, stat)
