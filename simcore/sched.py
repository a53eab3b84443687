"""Scheduling classes and priorities: CFS weights and virtual runtime for time-sharing threads,
a SYS class (illumos kernel threads at minclsyspri..maxclsyspri) and an RT class above it.

What is modelled (Linux kernel/sched/fair.c up to 6.5, the CFS rules):
- `NICE_TO_WEIGHT` is sched_prio_to_weight (kernel/sched/core.c); a thread's virtual runtime
  grows by delta_exec * 1024 / weight (calc_delta_fair), so a nice -20 thread's grows ~87 times
  slower than a nice 0 thread's.
- A thread that wakes after sleeping is placed at max(its vruntime, min_vruntime - latency/2)
  (place_entity with GENTLE_FAIR_SLEEPERS), so a sleeper gets at most half a latency period of
  credit.
- Wake-up preemption (check_preempt_wakeup / wakeup_preempt_entity): a woken thread of a higher
  class always preempts; a fair thread preempts a fair current thread only when the current
  thread's vruntime exceeds the wakee's by more than sched_wakeup_granularity converted to the
  wakee's virtual time (wakeup_gran: gran * 1024 / wakee weight).
- The tunables scale with the CPU count as SCHED_TUNABLESCALING_LOG does: factor
  1 + ilog2(min(ncpus, 8)); sched_latency 6 ms and sched_wakeup_granularity 1 ms times it.
- The run queue picks the highest class first, then the highest priority within SYS/RT (FIFO
  among equals), then the lowest vruntime among fair threads (pick_next_entity's leftmost).

Simplified: there are no task groups (cgroups), no load tracking (PELT) and no load balancer;
an unpinned thread takes an idle CPU when it wakes and idle CPUs pull waiting unpinned threads.
Each CPU keeps its own min_vruntime; a thread that moves CPU keeps its lag relative to the old
CPU's min_vruntime (as migrate_task_rq_fair does). A new thread starts at min_vruntime, without
the START_DEBIT of a fork.
"""

from __future__ import annotations

FAIR = 0
"""SCHED_NORMAL / illumos TS: time-sharing threads ordered by vruntime."""
SYS = 1
"""illumos SYS class (kernel threads at minclsyspri..maxclsyspri), above every TS thread."""
RT = 2
"""SCHED_FIFO: above SYS and fair threads."""

CLASSES = {"fair": FAIR, "sys": SYS, "rt": RT}

NICE_0_LOAD = 1024

NICE_TO_WEIGHT = (
    88761, 71755, 56483, 46273, 36291,
    29154, 23254, 18705, 14949, 11916,
    9548, 7620, 6100, 4904, 3906,
    3121, 2501, 1991, 1586, 1277,
    1024, 820, 655, 526, 423,
    335, 272, 215, 172, 137,
    110, 87, 70, 56, 45,
    36, 29, 23, 18, 15,
)
"""sched_prio_to_weight, nice -20 .. 19."""

MAXCLSYSPRI = -20
"""The SPL's maxclsyspri as a nice value: MAX_RT_PRIO mapped through PRIO_TO_NICE (spl's
sys/sysmacros.h), so spl_kmem_cache workers run SCHED_NORMAL at nice -20."""
MINCLSYSPRI = 60
"""illumos minclsyspri: the lowest SYS-class priority (60), above every TS priority (0..59)."""

PREEMPT_MODELS = ("none", "voluntary", "full")
"""CONFIG_PREEMPT_NONE / _VOLUNTARY / CONFIG_PREEMPT."""


def weight_of(nice: int) -> int:
    """CFS load weight of a nice value (-20..19)."""
    if not -20 <= nice <= 19:
        raise ValueError(f"nice must be in -20..19, got {nice}")
    return NICE_TO_WEIGHT[nice + 20]


def tunable_factor(ncpus: int) -> int:
    """SCHED_TUNABLESCALING_LOG: 1 + ilog2(min(ncpus, 8))."""
    return 1 + (min(max(ncpus, 1), 8).bit_length() - 1)


def default_wakeup_granularity(ncpus: int) -> int:
    """sysctl_sched_wakeup_granularity: 1 ms x (1 + ilog2(min(ncpus, 8))), ns."""
    return 1_000_000 * tunable_factor(ncpus)


def default_latency(ncpus: int) -> int:
    """sysctl_sched_latency: 6 ms x (1 + ilog2(min(ncpus, 8))), ns."""
    return 6_000_000 * tunable_factor(ncpus)


class SchedEntity:
    """What the scheduler knows of one thread (sched_entity plus the class and priority)."""

    __slots__ = ("cls", "prio", "nice", "weight", "vruntime")

    def __init__(self, cls: int = FAIR, nice: int = 0, prio: int = 0) -> None:
        self.cls = cls
        """FAIR, SYS or RT."""
        self.prio = prio
        """Priority within SYS/RT (higher runs first); 0 for fair threads."""
        self.nice = nice
        self.weight = weight_of(nice)
        self.vruntime = 0
        """Virtual runtime, ns (fair threads)."""

    def account(self, delta_exec: int) -> None:
        """update_curr: charge `delta_exec` ns of running to the virtual runtime."""
        if delta_exec > 0:
            w = self.weight
            self.vruntime += delta_exec if w == NICE_0_LOAD else delta_exec * NICE_0_LOAD // w

    def key(self) -> tuple[int, int, int]:
        """Sort key of the run queue: lower runs first."""
        return (-self.cls, -self.prio, self.vruntime if self.cls == FAIR else 0)


def wakeup_preempts(curr: SchedEntity, curr_vruntime: int, wakee: SchedEntity,
                    granularity: int) -> bool:
    """check_preempt_wakeup: does waking `wakee` preempt `curr` (whose up-to-date vruntime is
    `curr_vruntime`)? A higher class always does, a lower never; among fair threads only when
    curr's vruntime leads by more than the granularity in the wakee's virtual time."""
    if wakee.cls != curr.cls:
        return wakee.cls > curr.cls
    if wakee.cls != FAIR:
        return wakee.prio > curr.prio
    vdiff = curr_vruntime - wakee.vruntime
    if vdiff <= 0:
        return False
    w = wakee.weight
    gran = granularity if w == NICE_0_LOAD else granularity * NICE_0_LOAD // w
    return vdiff > gran


class Priority:
    """A thread's scheduling class and priority, as the code that creates the thread gives it
    (one argument to `Machine.spawn`, `Taskq` and `PeriodicWork`)."""

    __slots__ = ("sched_class", "nice", "prio")

    def __init__(self, sched_class: str = "fair", nice: int = 0, prio: int = 0) -> None:
        if sched_class not in CLASSES:
            raise ValueError(f"sched_class must be one of {', '.join(CLASSES)}")
        weight_of(nice)
        self.sched_class = sched_class
        self.nice = nice
        self.prio = prio

    def entity(self) -> SchedEntity:
        return SchedEntity(CLASSES[self.sched_class], self.nice, self.prio)

    def __repr__(self) -> str:
        if self.sched_class == "fair":
            return f"Priority(nice={self.nice})"
        return f"Priority({self.sched_class}, prio={self.prio})"


NICE_0 = Priority()
"""SCHED_NORMAL at nice 0: workload threads, Linux kworkers (cache_reap), kswapd."""
SPL_MAXCLSYSPRI = Priority("fair", nice=MAXCLSYSPRI)
"""The SPL's maxclsyspri: SCHED_NORMAL at nice -20 (spl_kmem_cache taskq workers)."""
ILLUMOS_MINCLSYSPRI = Priority("sys", prio=MINCLSYSPRI)
"""illumos minclsyspri: SYS class priority 60 (kmem_taskq, kmem_move_taskq)."""
ILLUMOS_MAXCLSYSPRI = Priority("sys", prio=99)
"""illumos maxclsyspri: SYS class priority 99 (the callout threads that run timeout(9F))."""
