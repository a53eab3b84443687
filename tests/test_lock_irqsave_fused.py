"""spin_lock_irqsave is local_irq_save followed by spin_lock, and spin_unlock_irqrestore is
spin_unlock followed by local_irq_restore: `SpinLock.lock_irqsave`, which writes the IRQs-off
acquire out (its ticket, and the hand-over the resumed waiter completes itself), and
`unlock_irqrestore`, which writes the release and the IRQ enable out, must give what the
separate calls give (`Thread.local_irq_save`, `SpinLock.lock` through `_acquire` and
`_handover`, `unlock`, `Thread.local_irq_restore`): the same grant order and times, lock_stat
columns, IRQ-off sections, busy time and events, with the lock held across a sync (a release
at the clock's instant, handed over by `_grant`), IRQs-on holders beside them, and threads
that already had IRQs off when they saved them."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from simcore import CostTable, Machine, MachineConfig, SpinLock

# one round: local work before, IRQs already off?, how it takes the lock (fused or written
# as the separate calls, or spin_lock with IRQs on), work inside, sync before the release
_round = st.tuples(st.integers(0, 300), st.booleans(), st.sampled_from(["irqsave", "lock"]),
                   st.integers(0, 500), st.booleans())


def _run(fused: bool, plan: list[list[tuple]]) -> tuple:
    m = Machine(MachineConfig(nodes=1, cpus_per_node=len(plan)), costs=CostTable.build({}))
    lock = SpinLock(m, "L")
    got: list[tuple[str, int, int]] = []

    def body(name, rounds):
        def run(t):
            for i, (before, off, how, inside, sync_first) in enumerate(rounds):
                t.charge_ns(before)
                if off:
                    t.local_irq_disable()
                if how == "lock":
                    yield from lock.lock(t)
                elif fused:
                    flags = yield from lock.lock_irqsave(t)
                else:
                    flags = t.local_irq_save()
                    yield from lock.lock(t)
                got.append((f"{name}.{i}", t.now, t.preempt_count))
                t.charge_ns(inside)
                if sync_first:
                    yield from t.sync()
                if how == "lock":
                    yield from lock.unlock(t)
                elif fused:
                    yield from lock.unlock_irqrestore(t, flags)
                else:
                    yield from lock.unlock(t)
                    yield from t.local_irq_restore(flags)
                if off:
                    yield from t.local_irq_enable()
        return run

    for i, rounds in enumerate(plan):
        m.spawn(f"t{i}", body(f"t{i}", rounds), cpu=i)
    m.run(10**7)
    s = lock.stat
    cpus = [(c.irq_off_total, c.irq_off_max, c.busy_ns) for c in m.cpus]
    m.metrics.fold()
    irq_off = list(m.irq_off.buckets)
    return (got, s.sums(), s.waittime_min, s.waittime_max, s.holdtime_min, s.holdtime_max,
            cpus, irq_off, m.env.now, next(m.env._eid), lock.owner, len(lock.waiters))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(_round, min_size=1, max_size=4), min_size=2, max_size=5))
def test_lock_irqsave_and_unlock_irqrestore_give_what_the_separate_calls_give(plan):
    fused = _run(True, plan)
    assert fused == _run(False, plan)
    got, sums = fused[0], fused[1]
    assert len(got) == sum(len(r) for r in plan) == sums[1]  # every round got the lock
    assert all(depth == 1 for _n, _at, depth in got)  # held once, preemption off
    assert fused[-2:] == (None, 0)  # released at the end, nobody left queued
    times = [at for _n, at, _d in got]
    assert times == sorted(times)  # one lock: granted one after another in time
