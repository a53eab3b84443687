"""simcore services: taskq dispatch_delay / cancel / dynamic workers, periodic work, memory
watermarks, reclaim and failure injection, bounded metrics, the policy entry-point group."""

from __future__ import annotations

from importlib.metadata import EntryPoint

from simcore import CostTable, Machine, MachineConfig, MemoryConfig, PeriodicWork, Taskq, WaitQueue
from simcore.flags import KM_NOSLEEP, KM_SLEEP
from simcore.memory import FailWindow
from simcore.metrics import SamplingConfig, Timeline


def machine(ncpus: int = 2, mem: MemoryConfig | None = None, **costs: int) -> Machine:
    return Machine(MachineConfig(cpus_per_node=ncpus), costs=CostTable.build(costs),
                   memory_config=mem or MemoryConfig())


def test_dispatch_delay_runs_after_the_delay_and_cancel_removes_a_pending_task():
    m = machine(2, taskq_dispatch=0, context_switch=0)
    tq = Taskq(m, "tq", nthreads=1)
    ran: list[tuple[str, int]] = []

    def work(t, tag):
        ran.append((tag, t.env.now))
        yield from ()

    def driver(t):
        yield from tq.dispatch_delay(t, work, 5000, "late")
        tid = yield from tq.dispatch_delay(t, work, 3000, "cancelled")
        t.charge_ns(1000)
        assert (yield from tq.cancel(t, tid)) is True
        assert (yield from tq.cancel(t, tid)) is False

    m.spawn("d", driver, cpu=0)
    m.run(100_000)
    assert ran == [("late", 5000)]
    assert tq.dispatched == 2 and tq.completed == 1


def test_dynamic_taskq_spawns_workers_up_to_its_maximum():
    m = machine(4, taskq_dispatch=0, context_switch=0, thread_spawn=10_000)
    tq = Taskq(m, "spl_kmem_cache", nthreads=3, dynamic=True)
    starts: list[int] = []

    def work(t):
        starts.append(t.env.now)
        t.charge_ns(50_000)
        yield from t.sync()

    def driver(t):
        for _ in range(5):
            yield from tq.dispatch(t, work)
            t.charge_ns(20_000)
            yield from t.sync()

    m.spawn("d", driver, cpu=0)
    m.run(10_000_000)
    assert len(tq.workers) == 3
    # worker 0 at 0; dispatch at 20us spawns worker 1 (ready 10us later); dispatch at 40us
    # spawns worker 2 (ready at 50us); the 4th task waits for worker 0 (free at 50us), the 5th
    # for worker 1 (free at 80us)
    assert sorted(starts) == [0, 30_000, 50_000, 60_000, 80_000]


def test_periodic_work_reruns_period_after_each_run_ends():
    m = machine(1, context_switch=0, wakeup_ipi=0)
    runs: list[int] = []

    def reap(t):
        runs.append(t.env.now)
        t.charge_ns(1000)
        yield from t.sync()

    PeriodicWork(m, "cache_reap/0", 2_000_000, reap, cpu=0, first_delay=500_000)
    m.run(7_000_000)
    assert runs == [500_000, 2_501_000, 4_502_000, 6_503_000]


def test_direct_reclaim_below_min_watermark_calls_shrinkers_and_dependencies():
    mem = MemoryConfig(total_bytes=1000 * 4096, watermark_min=0.1, watermark_low=0.2,
                       watermark_high=0.3, reclaimable_bytes=0)
    m = machine(1, mem)
    calls: list[str] = []

    def scan(t, nr):
        calls.append(f"shrink {nr}")
        freed = min(nr, m.memory.reserved)
        m.memory.unreserve(freed)
        yield from ()
        return freed

    def writeback(t):
        calls.append("writeback")
        yield from ()

    m.memory.register_shrinker("arc", lambda: m.memory.reserved, scan)
    m.memory.add_reclaim_dependency("writeback", writeback)
    m.memory.reserve(850)  # 150 free: above min (100)
    got: list[object] = []

    def body(t):
        got.append((yield from m.memory.alloc_pages(t, 6, KM_SLEEP)))   # 64 pages -> 86 < 100
        got.append((yield from m.memory.alloc_pages(t, 7, KM_NOSLEEP)))  # atomic: no reclaim

    m.spawn("a", body, cpu=0)
    m.run(10_000_000)
    # direct reclaim: the shrinker frees the 64 pages asked for, so the writeback dependency is
    # not needed; the allocation leaves 150 free pages, below low (200): kswapd wakes and
    # reclaims towards high (300) with the shrinker; the atomic request for 128 pages would
    # leave 22 < min/4
    assert calls == ["shrink 64", "shrink 150"]
    assert got[0] is not None and got[1] is None
    assert m.memory.stats["direct_reclaim"] == 1
    assert m.memory.stats["kswapd_wake"] == 1


def test_failure_injection_window():
    mem = MemoryConfig(fail_windows=[FailWindow(1000, 2000, 1.0)])
    m = machine(1, mem, page_alloc=0, context_switch=0, wakeup_ipi=0)
    got: list[bool] = []

    def body(t):
        for at in (500, 1500, 2500):
            yield from t.sleep(at - t.env.now)
            got.append((yield from m.memory.alloc_pages(t, 0, KM_SLEEP)) is not None)

    m.spawn("a", body, cpu=0)
    m.run(10_000)
    assert got == [True, False, True]
    assert m.memory.stats["injected_fail"] == 1


def test_timeline_memory_is_bounded_by_halving_resolution():
    import simpy

    env = simpy.Environment()
    tl = Timeline(env, SamplingConfig(interval=10, max_samples=100))
    tl.add_probe("x", lambda: {"v": env.now})
    tl.start()
    env.run(until=100_000)
    assert len(tl.rows) < 100
    assert tl.interval > 10
    times = [r["time_ns"] for r in tl.rows]
    assert times == sorted(times) and times[0] == 0


def test_third_party_policy_from_entry_point(monkeypatch):
    import policies.registry as reg

    ep = EntryPoint("toy", "policies.global_lock:GlobalLockPolicy", "kmemsim.policies")
    monkeypatch.setattr(reg, "entry_points",
                        lambda group: [ep] if group == "kmemsim.policies" else [])
    assert reg.get("toy").name == "global_lock"


def _recheck_time(wake_after: int) -> tuple[list[int], int]:
    """A waiter on CPU0 goes to sleep at t=0; a waker on CPU1 wakes it at `wake_after` and makes
    the condition true 100 ns later. Returns the times the waiter checked the condition and
    when it returned (context_switch 2000 ns, wake_up 0)."""
    m = Machine(MachineConfig(nodes=1, cpus_per_node=2), costs=CostTable.build({"wake_up": 0}))
    wq = WaitQueue(m, "wq")
    flag = [False]
    checks: list[int] = []
    done: list[int] = []

    def cond():
        checks.append(m.env.now)
        return flag[0]

    def waiter(t):
        yield from wq.wait_event_timeout(t, cond, 10_000_000)
        done.append(t.env.now)

    def waker(t):
        t.charge_ns(wake_after)
        yield from wq.wake_up_all(t)
        t.charge_ns(100)
        yield from t.sync()
        flag[0] = True

    m.spawn("w", waiter, cpu=0)
    m.spawn("k", waker, cpu=1)
    m.run(20_000_000)
    return checks, done[0]


def test_wakeup_inside_the_switch_window_is_rechecked_at_once_and_missed():
    # woken 500 ns after going to sleep (the 2000 ns switch out is not complete): the waiter
    # re-checks at 500, before the condition changes at 600, and sleeps out the timeout
    checks, done = _recheck_time(500)
    assert checks[:2] == [0, 500]
    assert done == 10_000_000


def test_wakeup_after_a_real_sleep_is_rechecked_after_the_switch_back_in():
    # woken at 5000 onto its idle CPU: the IPI and exit from idle (wakeup_ipi 3000 ns), the
    # switch back in (2000 ns), then the re-check at 10_000 sees the change
    checks, done = _recheck_time(5000)
    assert checks == [0, 10_000]
    assert done == 10_000


def _pinned_wake(waker_runs: int, preempt: str) -> list[str]:
    # one CPU: the waiter sleeps at t=0, the waker runs `waker_runs` ns and wakes it
    m = Machine(MachineConfig(nodes=1, cpus_per_node=1, preempt=preempt),
                costs=CostTable.build({"wake_up": 0, "context_switch": 0}))
    wq = WaitQueue(m, "wq")
    order: list[str] = []

    def waiter(t):
        yield from wq.wait_event(t, lambda: bool(order))
        order.append("waiter runs")

    def waker(t):
        t.charge_ns(waker_runs)
        order.append("wake")
        yield from wq.wake_up_all(t)
        order.append("waker continues")
        t.charge_ns(10)
        yield from t.sync()

    m.spawn("w", waiter, cpu=0)
    m.spawn("k", waker, cpu=0)
    m.run(10_000_000)
    return order


def test_woken_thread_within_the_granularity_does_not_preempt_the_waker():
    # 1 CPU: sched_wakeup_granularity 1 ms; the waker's vruntime leads by 1 us only
    assert _pinned_wake(1_000, "full") == ["wake", "waker continues", "waiter runs"]


def test_woken_thread_past_the_granularity_preempts_the_waker_under_full_preemption():
    # the waker ran 2 ms > 1 ms: under CONFIG_PREEMPT the wake-up's spin_unlock_irqrestore is
    # a preemption point and the waiter runs first; under voluntary preemption the waker goes
    # on to its next preemption point (here: the end of its run)
    assert _pinned_wake(2_000_000, "full") == ["wake", "waiter runs", "waker continues"]
    assert _pinned_wake(2_000_000, "voluntary") == ["wake", "waker continues", "waiter runs"]
