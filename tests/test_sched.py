"""The scheduler (classes, CFS vruntime, wake-up preemption), the mutexes that spin or block,
and the per-node page pools, each against numbers derived by hand from the kernel's rules and
the cost table."""

from __future__ import annotations

import ast
from pathlib import Path

from simcore import CostTable, Machine, MachineConfig, Taskq
from simcore.flags import KM_SLEEP
from simcore.memory import MemoryConfig
from simcore.mutex import AdaptiveMutex
from simcore.sched import (
    NICE_TO_WEIGHT,
    SPL_MAXCLSYSPRI,
    SchedEntity,
    default_wakeup_granularity,
    wakeup_preempts,
)

US = 1_000
MS = 1_000_000


def _busy(t, until: int, ran: list[int], step: int = 50 * US):
    """A CPU-bound nice-0 loop that returns to user space (a checkpoint) every `step`; notes
    the times at which it ran."""
    while t.now < until:
        ran.append(t.env.now)
        t.charge_ns(step)
        yield from t.checkpoint()


def test_wakeup_granularity_defaults_and_weights():
    # sysctl_sched_wakeup_granularity = 1 ms x (1 + ilog2(min(ncpus, 8)))
    assert [default_wakeup_granularity(n) for n in (1, 2, 4, 8, 64)] == [
        1 * MS, 2 * MS, 3 * MS, 4 * MS, 4 * MS]
    assert NICE_TO_WEIGHT[0] == 88761 and NICE_TO_WEIGHT[20] == 1024
    # a nice -20 wakee: the 3 ms granularity is 3 ms * 1024 / 88761 = 34609 ns of its vruntime
    curr, wakee = SchedEntity(nice=0), SchedEntity(nice=-20)
    assert not wakeup_preempts(curr, 34_609, wakee, 3 * MS)
    assert wakeup_preempts(curr, 34_610, wakee, 3 * MS)


def test_nice_minus_20_taskq_worker_runs_before_runnable_nice_0_threads():
    # three nice-0 threads share CPU0; at 10 ms one of them dispatches to a one-thread taskq
    # at maxclsyspri (nice -20) bound to CPU0. The worker slept since t=0: place_entity puts
    # it at max(0, min_vruntime - latency/2), far left of the other two, and the wake-up
    # preempts the waker (its vruntime leads by far more than 3 ms * 1024 / 88761): the task
    # runs at the waker's next checkpoint, before B and C run again.
    m = Machine(MachineConfig(nodes=1, cpus_per_node=4))
    tq = Taskq(m, "spl_kmem_cache", 1, affinity=[0], pri=SPL_MAXCLSYSPRI)
    started: list[int] = []
    ran = {"A": [], "B": [], "C": []}

    def task(w):
        started.append(w.env.now)
        w.charge_ns(10 * US)
        yield from w.sync()

    def a(t):
        yield from _busy(t, 10 * MS, ran["A"])
        yield from tq.dispatch(t, task)
        dispatched.append(t.env.now)
        yield from _busy(t, 20 * MS, ran["A"])

    dispatched: list[int] = []
    m.spawn("A", a, cpu=0)
    m.spawn("B", lambda t: _busy(t, 20 * MS, ran["B"]), cpu=0)
    m.spawn("C", lambda t: _busy(t, 20 * MS, ran["C"]), cpu=0)
    m.run(30 * MS)
    assert started and dispatched
    d, s = dispatched[0], started[0]
    next_b = min(x for x in ran["B"] if x >= d)
    next_c = min(x for x in ran["C"] if x >= d)
    assert s < next_b and s < next_c
    # the waker reaches its next checkpoint within one 50 us step; the worker then pays a
    # context switch (2 us) before its first instruction
    assert s - d <= 50 * US + 2 * US + 300
    assert m.metrics.counters["sched.wakeup_preempt"] >= 1


def _granularity_case(sleep_ns: int) -> tuple[int, list[int]]:
    # 4 CPUs: sched_wakeup_granularity 3 ms, sched_slice 3 ms. D sleeps `sleep_ns` from t=0
    # while A runs on CPU0; when D wakes, A's vruntime leads D's by `sleep_ns`.
    m = Machine(MachineConfig(nodes=1, cpus_per_node=4))
    d_runs: list[int] = []
    a_runs: list[int] = []

    def d(t):
        yield from t.sleep(sleep_ns)
        d_runs.append(t.env.now)

    m.spawn("D", d, cpu=0)
    m.spawn("A", lambda t: _busy(t, 10 * MS, a_runs), cpu=0)
    m.run(12 * MS)
    return d_runs[0], a_runs


def test_wakeup_within_granularity_does_not_preempt_the_waker():
    # D wakes at 2 ms: A leads by 2 ms < 3 ms, so A keeps its CPU until the tick finds it past
    # its 3 ms slice (its first checkpoint at or after 3 ms), then D runs after a context
    # switch
    ran_at, a_runs = _granularity_case(2 * MS)
    assert ran_at >= 3 * MS
    assert ran_at <= 3 * MS + 50 * US + 2 * US
    assert any(2 * MS < x < 3 * MS for x in a_runs)


def test_wakeup_beyond_granularity_preempts_at_the_next_checkpoint():
    # D wakes at 4 ms: A leads by 4 ms > 3 ms; A gives the CPU up at its next checkpoint
    ran_at, _ = _granularity_case(4 * MS)
    assert 4 * MS <= ran_at <= 4 * MS + 50 * US + 2 * US


def _mutex_case(owner_sleeps: bool) -> tuple[AdaptiveMutex, list[int]]:
    m = Machine(MachineConfig(nodes=1, cpus_per_node=2))
    mtx = AdaptiveMutex(m, "kmem_depot")
    other_ran: list[int] = []

    def owner(t):
        yield from mtx.lock(t)          # free: lock_acquire 20 ns, charged
        t.charge_ns(10 * US)
        yield from t.sync()             # t = 10_020
        if owner_sleeps:
            yield from t.sleep(50 * US)  # leaves its CPU holding the mutex
        else:
            t.charge_ns(50 * US)
        yield from mtx.unlock(t)

    def waiter(t):
        t.charge_ns(1 * US)
        yield from mtx.lock(t)
        yield from mtx.unlock(t)

    def bystander(t):
        other_ran.append(t.env.now)
        yield from t.sync()

    m.spawn("owner", owner, cpu=0)
    m.spawn("waiter", waiter, cpu=1)
    m.spawn("bystander", bystander, cpu=1)
    m.run(1 * MS)
    return mtx, other_ran


def test_adaptive_mutex_waiter_spins_while_the_owner_runs():
    # the waiter asks at 1 us and spins (its 20 ns owner check inside the spin) until the
    # owner releases at 10_020 + 50_000 = 60_020
    mtx, other = _mutex_case(owner_sleeps=False)
    st = mtx.stat
    assert (st.spins, st.blocks) == (1, 0)
    assert st.spin_total == 60_020 - 1_000
    # lock_stat's wait ends when the lock word's line arrives from the owner's CPU (100 ns)
    assert st.waittime_total == 60_020 - 1_000 + 100
    # the spinning waiter kept CPU1: the bystander only ran after it
    assert other and other[0] >= 60_020


def test_adaptive_mutex_waiter_blocks_when_the_owner_sleeps():
    # the waiter spins from 1_000 until the owner leaves its CPU at 10_020, then blocks: CPU1 is free for the bystander. The owner wakes at 60_020
    # onto its idle CPU (wakeup_ipi 3 us, context switch 2 us) and releases at 65_020,
    # handing the mutex over.
    mtx, other = _mutex_case(owner_sleeps=True)
    st = mtx.stat
    assert (st.spins, st.blocks) == (1, 1)
    assert st.spin_total == 10_020 - 1_000
    assert st.block_total == 65_020 - 10_020
    assert st.waittime_total == 65_020 - 1_000 + 100  # and the line's transfer
    assert other and 10_020 <= other[0] < 65_020


def test_allocation_on_node_1_takes_node_1_pages_while_they_last():
    # 64 MiB over 2 nodes: 8192 pages each; low watermark 2 % of 16384 = 327 pages, 163 per
    # node. A thread on CPU2 (node 1) takes node-1 pages while node 1 stays at or above its
    # low watermark: 8192 - 163 = 8029 pages, then falls back to node 0.
    m = Machine(MachineConfig(nodes=2, cpus_per_node=2),
                memory_config=MemoryConfig(total_bytes=64 << 20))
    mem = m.memory
    nids: list[int] = []

    def body(t):
        for _ in range(8100):
            addr = yield from mem.alloc_pages(t, 0, KM_SLEEP)
            nids.append(mem.page_to_nid(addr))

    m.spawn("alloc", body, cpu=2)
    m.run(1_000 * MS)
    assert m.cpus[2].node == 1
    assert nids[:8029] == [1] * 8029
    assert nids[8029:] == [0] * (8100 - 8029)
    assert mem.stats["alloc_remote_node"] == 8100 - 8029


def test_vmalloc_holds_vmap_area_lock_for_the_range_work_only():
    # a 64-page vmalloc and its vfree each hold vmap_area_lock for the tree search only
    # (vmap_area_search 300 ns + lock_acquire 20 ns); the 64 page mappings are outside
    m = Machine(MachineConfig(nodes=1, cpus_per_node=2))
    mem = m.memory

    def body(t):
        addr = yield from mem.vmalloc(t, 64 * 4096, KM_SLEEP)
        yield from mem.vfree(t, addr)

    m.spawn("v", body, cpu=0)
    m.run(10 * MS)
    st = mem.vmap_lock.stat
    assert st.acquisitions == 2
    assert st.holdtime_max == 300 + 20


def test_lazy_purge_after_lazy_max_pages():
    # lazy_max_pages = 32 MiB of pages x fls(2 CPUs) = 8192 * 2 = 16384 pages: 64-page areas
    # are purged on the vfree that brings the lazy count above it, the 257th
    m = Machine(MachineConfig(nodes=1, cpus_per_node=2))
    mem = m.memory
    assert mem.lazy_max_pages == 16384

    def body(t):
        for _ in range(257):
            addr = yield from mem.vmalloc(t, 64 * 4096, KM_SLEEP)
            yield from mem.vfree(t, addr)

    m.spawn("v", body, cpu=0)
    m.run(1_000 * MS)
    assert mem.stats["vmap_purge"] == 1
    assert mem.lazy_pages == 0


def test_fstrans_thread_skips_reclaim_dependencies():
    # PF_MEMALLOC_NOIO: direct reclaim on behalf of the thread never runs the dependencies
    m = Machine(MachineConfig(nodes=1, cpus_per_node=1),
                costs=CostTable.build({}), memory_config=MemoryConfig(total_bytes=4 << 20))
    mem = m.memory
    ran: list[str] = []

    def dep(t):
        ran.append(t.name)
        yield from t.sync()

    mem.add_reclaim_dependency("writeback", dep)

    def body(t):
        t.memalloc_noio = True
        yield from mem.direct_reclaim(t, 1, KM_SLEEP)
        t.memalloc_noio = False
        yield from mem.direct_reclaim(t, 1, KM_SLEEP)

    m.spawn("grow", body, cpu=0)
    m.run(10 * MS)
    assert ran == ["grow"]


LAYERS = [
    ["units", "rand", "flags", "costs", "sched", "clock"],
    ["cpu"],
    ["metrics", "deadlock"],
    ["spinlock", "mutex", "waitqueue", "taskq", "timer"],
    ["memory"],
    ["machine"],
    ["trace"],
]


def test_simcore_imports_one_way():
    # every simcore import (TYPE_CHECKING ones included) goes to an earlier layer, or to a
    # module listed before it in its own layer (machine.py's docstring gives the order)
    root = Path(__file__).resolve().parent.parent / "simcore"
    layer = {name: (i, j) for i, names in enumerate(LAYERS) for j, name in enumerate(names)}
    for path in root.glob("*.py"):
        mod = path.stem
        if mod == "__init__":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and \
                    node.module.startswith("simcore."):
                dep = node.module.split(".")[1]
                assert layer[dep] < layer[mod], f"simcore/{mod}.py imports simcore.{dep}"


def test_kernel_threads_get_their_kernels_priority():
    # spl_kmem_cache: taskq_create(..., maxclsyspri, ...) -> SCHED_NORMAL nice -20, and
    # taskq_thread marks itself with spl_fstrans_mark; illumos kmem_taskq and kmem_move_taskq
    # at minclsyspri (SYS 60); Linux cache_reap kworkers at nice 0
    from policies.linux_slab.policy import LinuxSlabPolicy
    from policies.solaris.policy import SolarisPolicy
    from policies.spl.policy import SplPolicy
    from simcore.sched import FAIR, SYS

    m = Machine(MachineConfig(nodes=1, cpus_per_node=2))
    spl = SplPolicy(m, {})
    w = spl.taskq.workers[0]
    assert (w.se.cls, w.se.nice, w.memalloc_noio) == (FAIR, -20, True)
    assert SplPolicy(Machine(MachineConfig(cpus_per_node=2)), {"spl_fstrans": "2012"}) \
        .taskq.workers[0].memalloc_noio is False
    sol = SolarisPolicy(Machine(MachineConfig(cpus_per_node=2)))
    for tq in (sol.kmem_taskq, sol.kmem_move_taskq):
        assert (tq.workers[0].se.cls, tq.workers[0].se.prio) == (SYS, 60)
    m3 = Machine(MachineConfig(nodes=1, cpus_per_node=2))
    lin = LinuxSlabPolicy(m3)
    from policies.base import CacheSpec
    lin.cache_create(CacheSpec("c", 256))
    lin.start()
    assert lin.reapers and all(r.thread.se.cls == FAIR and r.thread.se.nice == 0
                               for r in lin.reapers)


def test_workload_nice_reaches_its_threads(tmp_path):
    from experiments.config import validate
    from experiments.run import build

    exp = validate({"name": "n", "seed": 1, "duration": "1ms",
                    "machine": {"cpus_per_node": 2}, "policy": {"name": "global_lock"},
                    "caches": [{"name": "a", "size": 256}],
                    "workloads": [{"kind": "steady", "nice": 5}]}, tmp_path / "n.toml")
    sim = build(exp)
    threads = [t for t in sim.machine.threads if t.name.startswith("steady")]
    assert threads and all(t.se.nice == 5 and t.se.weight == 335 for t in threads)


def test_every_cost_says_where_its_number_comes_from():
    from simcore.costs import COST_SOURCES, DEFAULT_COSTS

    assert set(COST_SOURCES) == set(DEFAULT_COSTS)
    assert all(len(src) > 20 for src in COST_SOURCES.values())


def _kernel_loop_case(preempt: str) -> int:
    # 1 CPU: a taskq worker runs a 10 ms task in 1 ms steps that only sync (no cond_resched
    # inside); a nice-0 thread becomes runnable at 0.5 ms. Returns when that thread first ran.
    m = Machine(MachineConfig(nodes=1, cpus_per_node=1, preempt=preempt))
    tq = Taskq(m, "tq", 1, affinity=[0])
    first: list[int] = []

    def task(w):
        for _ in range(10):
            w.charge_ns(1 * MS)
            yield from w.sync()

    def other(t):
        first.append(t.env.now)
        yield from t.sync()

    def starter(t):
        yield from tq.dispatch(t, task)

    m.spawn("starter", starter, cpu=0)
    m.env.timeout(500 * US).callbacks.append(lambda _e: m.spawn("other", other, cpu=0))
    m.run(50 * MS)
    return first[0]


def test_preemption_model_decides_whether_a_kernel_loop_is_preempted():
    # full: the tick preempts the worker at its first sync past the 3 ms slice (t = 3 ms);
    # voluntary and none: the loop has no preemption point, the other thread waits for the
    # task's end (10 ms) where the worker's cond_resched gives the CPU up
    assert 3 * MS <= _kernel_loop_case("full") < 4 * MS
    assert _kernel_loop_case("voluntary") >= 10 * MS
    assert _kernel_loop_case("none") >= 10 * MS
