"""The contended round trip's hand-over: a waiter that arrives with IRQs off takes its ticket in
its arrival's callback and is resumed once, and completes the acquire itself: it takes the
lock and counts its wait (`SpinLock._handover`, inlined in `lock_irqsave`), or after `_grant`
took the lock for it at a release that falls at the clock's instant, counts its wait
(`_spun`). One event per step never takes that path (it needs a batched clock), so comparing
the two runs checks the fused path against the generator path: same grant order, same times,
same lock_stat columns, same IRQ-off sections."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from simcore import AdaptiveMutex, CostTable, Machine, MachineConfig, SpinLock

TRANSFER = 100  # cacheline_transfer (default cost table)


def _machine(ncpus: int, batching: bool = True) -> Machine:
    return Machine(MachineConfig(nodes=1, cpus_per_node=ncpus, batching=batching),
                   costs=CostTable.build({}))


def test_an_irqs_off_waiter_resumes_with_the_lock_taken_and_its_wait_counted():
    # holder takes the free lock at 0 and releases at its local time 20 + 1000 = 1020, the
    # clock still at 0; the waiter arrives with IRQs saved at 50 (+ irq_disable): it spins
    # until 1020 and gets the line at 1120
    m = _machine(2)
    lock = SpinLock(m, "L")
    seen: list[tuple] = []

    def holder(t):
        flags = yield from lock.lock_irqsave(t)
        t.charge_ns(1000)
        yield from lock.unlock_irqrestore(t, flags)

    def waiter(t):
        t.charge_ns(50)
        flags = yield from lock.lock_irqsave(t)
        s = lock.stat
        seen.append((t.now, lock.owner is t, t.spinning, t.blocked_on, t.preempt_count,
                     t.irqs_off, s.contentions, s.waittime_total, s.acquisitions))
        yield from lock.unlock_irqrestore(t, flags)

    m.spawn("holder", holder, cpu=0)
    w = m.spawn("waiter", waiter, cpu=1)
    m.run(100_000)
    arrived = 50 + m.costs.values["irq_disable"]
    released = m.costs.values["irq_disable"] + m.costs.values["lock_acquire"] + 1000
    assert seen == [(released + TRANSFER, True, None, None, 1, True, 1,
                     released - arrived + TRANSFER, 2)]
    assert w.preempt_count == 0 and not w.irqs_off and not w.held


def test_a_release_at_the_clocks_instant_hands_over_and_counts_before_the_resume():
    # the holder (IRQs on) must synchronise before it releases, because another CPU's event
    # falls inside its hold: the release is then at the clock's instant, so the waiter (IRQs
    # off, queued in its arrival) is handed the lock at once (`_grant`) and its wait is
    # counted when its hand-over event resumes it (`_spun`)
    m = _machine(3)
    lock = SpinLock(m, "L")
    seen: list[tuple] = []

    def holder(t):
        yield from lock.lock(t)
        t.charge_ns(1000)
        yield from lock.unlock(t)

    def waiter(t):
        t.charge_ns(50)
        t.local_irq_disable()
        yield from lock.lock(t)
        seen.append((t.now, lock.stat.contentions, lock.stat.waittime_total, t.spinning))
        yield from lock.unlock(t)
        yield from t.local_irq_enable()

    def other(t):
        t.charge_ns(300)
        yield from t.sync()

    m.spawn("holder", holder, cpu=0)
    m.spawn("waiter", waiter, cpu=1)
    m.spawn("other", other, cpu=2)
    m.run(100_000)
    arrived = 50 + m.costs.values["irq_disable"]
    released = m.costs.values["lock_acquire"] + 1000
    assert seen == [(released + TRANSFER, 1, released - arrived + TRANSFER, None)]


def test_a_mutex_waiter_still_counts_its_own_wait():
    # mutex waiters keep the take-only hand-over (`_grant_on_wake`) armed on their wait
    m = _machine(2)
    mx = AdaptiveMutex(m, "M")

    def holder(t):
        yield from mx.lock(t)
        t.charge_ns(1000)
        yield from mx.unlock(t)

    def waiter(t):
        t.charge_ns(50)
        yield from mx.lock(t)
        yield from mx.unlock(t)

    m.spawn("holder", holder, cpu=0)
    m.spawn("waiter", waiter, cpu=1)
    m.run(100_000)
    s = mx.stat
    assert (s.acquisitions, s.contentions, s.spins, s.blocks) == (2, 1, 1, 0)
    assert s.waittime_total == m.costs.values["lock_acquire"] + 1000 - 50 + TRANSFER
    assert not mx.waiters and mx.owner is None


# one thread's round: local work before, how it takes the lock, work inside, how it drops it
_round = st.tuples(st.integers(0, 400), st.sampled_from(["irqsave", "lock", "lock_irqoff"]),
                   st.integers(0, 600), st.booleans())


def _run(batching: bool, plan: list[list[tuple]]) -> tuple:
    m = _machine(len(plan), batching)
    lock = SpinLock(m, "L")
    got: list[tuple[str, int]] = []

    def body(name, rounds):
        def run(t):
            for i, (before, how, inside, sync_first) in enumerate(rounds):
                t.charge_ns(before)
                if how == "irqsave":
                    flags = yield from lock.lock_irqsave(t)
                else:
                    if how == "lock_irqoff":
                        t.local_irq_disable()
                    yield from lock.lock(t)
                got.append((f"{name}.{i}", t.now))
                t.charge_ns(inside)
                if sync_first:
                    yield from t.sync()
                if how == "irqsave":
                    yield from lock.unlock_irqrestore(t, flags)
                else:
                    yield from lock.unlock(t)
                    if how == "lock_irqoff":
                        yield from t.local_irq_enable()
        return run

    for i, rounds in enumerate(plan):
        m.spawn(f"t{i}", body(f"t{i}", rounds), cpu=i)
    m.run(10**7)
    s = lock.stat
    cpus = [(c.irq_off_total, c.irq_off_max, c.busy_ns) for c in m.cpus]
    m.metrics.fold()
    return (got, s.sums(), s.waittime_min, s.waittime_max, s.holdtime_min, s.holdtime_max,
            cpus, m.env.now)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.lists(_round, min_size=1, max_size=4), min_size=2, max_size=4))
def test_fused_hand_over_gives_what_one_event_per_step_gives(plan):
    batched = _run(True, plan)
    assert batched == _run(False, plan)
    got, sums = batched[0], batched[1]
    contentions, acquisitions = sums[0], sums[1]
    assert acquisitions == sum(len(r) for r in plan) == len(got)
    assert contentions <= acquisitions
    assert batched[2] >= TRANSFER or contentions == 0  # every wait includes the line's arrival
