"""Cancellable timers (simcore.waitqueue.TimerQueue) against one simpy.Timeout per timer, and the
timed waits of simcore.waitqueue.WaitQueue that use them."""

from __future__ import annotations

import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from simcore import CostTable, Machine, MachineConfig
from simcore.waitqueue import TimerQueue, WaitQueue

# one step of a script: wait `gap` ns, then arm a timer of `delay` ns, cancel the timer armed
# `back` arms ago, or schedule an unrelated timeout of `delay` ns (ties at one instant)
STEP = st.tuples(st.integers(0, 30), st.sampled_from(["arm", "cancel", "other"]),
                 st.integers(0, 60), st.integers(0, 5))


def _run(script: list[tuple[int, str, int, int]], queued: bool) -> list[tuple]:
    """Play `script` with a TimerQueue (`queued`) or with one simpy.Timeout per timer; the
    log has every callback's instant and, at each, the earliest pending event's instant."""
    env = simpy.Environment()
    tq = TimerQueue(env)
    log: list[tuple] = []
    armed: list = []

    def head() -> int | None:
        return env._queue[0][0] if env._queue else None

    def fired(name: object) -> None:
        log.append(("fire", env.now, name, head()))

    def driver():  # type: ignore[no-untyped-def]
        for i, (gap, op, delay, back) in enumerate(script):
            yield env.timeout(gap)
            log.append(("step", env.now, i, head()))
            if op == "arm":
                if queued:
                    armed.append(tq.arm(delay, fired, i))
                else:
                    tmo = env.timeout(delay)
                    box = [True]
                    tmo.callbacks.append(lambda _e, i=i, box=box: box[0] and fired(i))
                    armed.append(box)
            elif op == "cancel" and armed:
                victim = armed[max(0, len(armed) - 1 - back)]
                if queued:
                    TimerQueue.cancel(victim)
                else:
                    victim[0] = False
            elif op == "other":
                env.timeout(delay).callbacks.append(lambda _e, i=i: fired(("other", i)))

    env.process(driver())
    env.run()
    return log


@settings(max_examples=300, deadline=None)
@given(st.lists(STEP, max_size=60))
def test_timer_queue_fires_where_one_timeout_per_timer_would(script):
    """Every callback runs at the same instant and in the same order among the events of that
    instant, and the earliest pending event is at the same instant at every step, as with a
    simpy.Timeout per timer whose cancelled timers still wait in SimPy's queue."""
    assert _run(script, queued=True) == _run(script, queued=False)


def test_only_the_earliest_timer_is_in_simpys_queue():
    env = simpy.Environment()
    tq = TimerQueue(env)
    seen: list[tuple[int, int]] = []
    for i in range(100):
        tq.arm(1000 + i, lambda arg: seen.append((env.now, arg)), i)
    assert len(env._queue) == 1
    env.run()
    assert seen == [(1000 + i, i) for i in range(100)]


def test_cancelled_timers_at_one_instant_fire_once():
    """A wait woken and put back to sleep re-arms its timer for the same deadline: the
    cancelled timers of that instant leave SimPy's queue as one event, the last."""
    env = simpy.Environment()
    tq = TimerQueue(env)
    fired: list[int] = []
    first = tq.arm(500, fired.append, 0)
    dead = [tq.arm(500, fired.append, i) for i in range(1, 6)]
    live = tq.arm(700, fired.append, 9)
    for timer in [first, *dead]:
        TimerQueue.cancel(timer)
    steps = 0
    while env._queue:
        env.step()
        steps += 1
    assert fired == [9]
    assert live.func is None
    assert steps == 3  # the programmed first one, the last of the cancelled ones, the live one


def _herd(n: int, grow_at: int, timeout: int) -> tuple[dict[str, tuple[int, int]], int]:
    m = Machine(MachineConfig(nodes=1, cpus_per_node=n + 1), costs=CostTable.build({}))
    wq = WaitQueue(m, "wq")
    ready = [False]
    out: dict[str, tuple[int, int]] = {}

    def waiter(t):  # type: ignore[no-untyped-def]
        rem = yield from wq.wait_event_timeout(t, lambda: ready[0], timeout)
        out[t.name] = (t.env.now, rem)

    def waker(t):  # type: ignore[no-untyped-def]
        t.charge_ns(grow_at)
        yield from t.sync()
        ready[0] = True
        yield from wq.wake_up_all(t)

    for i in range(n):
        m.spawn(f"w{i}", waiter, cpu=i)
    m.spawn("waker", waker, cpu=n)
    m.run(grow_at + 10)
    expire = wq.timers._expire
    timer_events = sum(1 for *_key, ev in m.env._queue if ev.callbacks == [expire])
    m.run(grow_at + 2 * timeout)
    return out, timer_events


def test_woken_herd_leaves_no_timeout_per_waiter_behind():
    """Eight timed waiters woken together return the time left and leave one timer event,
    not eight stale timeouts, in SimPy's queue."""
    out, timer_events = _herd(8, grow_at=1000, timeout=100_000)
    assert sorted(out) == [f"w{i}" for i in range(8)]
    assert all(at >= 1000 and rem == 100_000 - at for at, rem in out.values())
    assert timer_events == 1


def test_waiters_that_time_out_return_zero():
    out, _ = _herd(4, grow_at=50_000, timeout=10_000)
    assert all(rem == 0 and at == 10_000 for at, rem in out.values())
