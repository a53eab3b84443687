"""`steady`: each thread allocates and frees objects, keeping about `live_objects` alive, each
object living for a duration drawn from `lifetime`.

One thread per selected CPU (or several). A thread frees the object whose lifetime has ended
first; otherwise it allocates while below its target; otherwise it sleeps until the next death.
With think time 0 and short lifetimes this is a tight alloc/free loop (the magazine fast path);
with long lifetimes it is a slowly churning population.

A thread runs one of two loops making the same decisions at the same simulated times:
`_thread` tries the policy's fast path first and counts its hits; `_thread_slow`, for a policy
with no fast path (or a run with fast paths off, `Workload.no_fast_paths`), sends every
operation through the generator path without asking a fast path that would decline.
"""

from __future__ import annotations

import heapq
from typing import Any

from pydantic import Field

from simcore.cpu import Gen, Thread
from simcore.flags import NAMES
from simcore.units import Duration
from workloads.base import Workload, WorkloadParams
from workloads.lifetimes import Lifetime


class SteadyParams(WorkloadParams):
    caches: list[str] = Field(default_factory=list, description=(
        "caches to allocate from (names from [[caches]]); empty = all caches"))
    weights: list[float] = Field(default_factory=list, description=(
        "relative weight of each cache in `caches` (default: equal)"))
    cpus: list[int] = Field(default_factory=list, description="CPUs to run on (empty = all)")
    threads_per_cpu: int = Field(default=1, gt=0, description="threads pinned to each CPU")
    live_objects: int = Field(default=64, gt=0, description="target live objects per thread")
    lifetime: Lifetime = Field(default_factory=lambda: Lifetime(dist="exponential", mean=50_000),
                               description="object lifetime distribution")
    think: Duration = Field(default=0, ge=0, description="CPU work between two operations")
    flags: str = Field(default="KM_SLEEP", pattern="^(KM_SLEEP|KM_NOSLEEP|KM_PUSHPAGE|KM_NOFS)$",
                       description="allocation flags: KM_SLEEP, KM_NOSLEEP, KM_PUSHPAGE (no I/O "
                       "in reclaim, may dip into reserves) or KM_NOFS")
    preempt_disabled: bool = Field(default=False, description=(
        "allocate inside a kfpu_begin()/preempt_disable() section: preemption off, so a sleep "
        "is 'scheduling while atomic' (zfs#13317)"))
    start: Duration = Field(default=0, ge=0, description="when the threads start")
    stop: Duration | None = Field(default=None, gt=0, description="when they stop (default: end)")


class Steady(Workload):
    """Steady alloc/free churn with a target live population and lifetime distribution."""

    kind = "steady"
    summary = "alloc/free churn per CPU with a target live population and lifetime distribution"
    Params = SteadyParams

    def start(self) -> None:
        p: SteadyParams = self.params
        names = p.caches or list(self.caches)
        self._caches = [self.caches[n] for n in names]
        weights = p.weights or [1.0] * len(names)
        if len(weights) != len(names):
            raise ValueError("steady: weights must match caches")
        total = sum(weights)
        run = 0.0
        self._cum = []
        for w in weights:
            run += w / total
            self._cum.append(run)
        self._flags = NAMES[p.flags]
        cpus = p.cpus or range(self.machine.ncpus)
        for cpu in cpus:
            for k in range(p.threads_per_cpu):
                name = f"{self.label}/{cpu}" + (f".{k}" if p.threads_per_cpu > 1 else "")
                self.spawn(name, self._thread_slow if self.no_fast_paths else self._thread,
                           cpu=cpu)

    def _thread(self, t: Thread) -> Gen:
        """The thread's loop. The fast paths are plain calls and their latencies are tallied
        (Workload.fold_latency); only a declined fast path, a sleep or a checkpoint that is due
        (a tick of local work, a waiting thread, an interrupt) yields to SimPy."""
        p: SteadyParams = self.params
        rng = self.machine.rng(f"{t.name}")
        lifetimes = p.lifetime.blocks(rng)
        drawn: list[int] = []
        caches, cum = self._caches, self._cum
        single = caches[0] if len(caches) == 1 else None
        stop = p.stop if p.stop is not None else 1 << 62
        target = p.live_objects
        think = p.think
        flags = self._flags
        live: list[tuple[int, int, int, Any]] = []
        seq = 0
        alloc_fast, free_fast = self._alloc_fast, self._free_fast
        alloc, free = self.policy.alloc, self.policy.free
        tallies = self._tallies
        ta1, tf1 = tallies(single) if single is not None else (None, None)
        heappush, heappop = heapq.heappush, heapq.heappop
        atomic = p.preempt_disabled
        cpu = t.cpu
        env = t.env
        tick = self.machine.tick_ns
        hit_ns = self.policy.fast_hit_ns(single) if single is not None else None
        counted = hit_ns is not None
        # a policy whose hits vary in cost names its usual one: hits that charged exactly
        # that are counted too, the others tallied by value (-1: nothing is usual)
        usual = None if counted or single is None else self.policy.usual_hit_ns(single)
        ua, uf = usual or (-1, -1)
        if usual is not None:
            hit_ns = usual
        # hits on the one cache are counted in na / nf (each costs hit_ns) and handed to
        # count_hits before the thread yields: nobody reads the counts while it runs
        na = nf = 0
        # local work after which a checkpoint is due: a tick's worth, or less when an
        # interrupt arrives sooner, or none when a thread waits for the CPU (only another
        # process or a slow path can change that: -1 asks for it to be worked out again)
        limit = -1
        if p.start:
            yield from t.sleep(p.start - t.now)
        while True:
            pending = t.pending
            now = env._now + pending
            if now >= stop:
                break
            if live and live[0][0] <= now:
                _death, _s, obj, cache = heappop(live)
                if free_fast(t, cache, obj):
                    if counted:
                        nf += 1
                    else:
                        ns = t.pending - pending
                        if ns == uf:
                            nf += 1
                        else:
                            (tf1 if cache is single else tallies(cache)[1])[ns] += 1
                            self.frees += 1
                else:
                    if na or nf:
                        self.count_hits(single, hit_ns, na, nf)
                        na = nf = 0
                    # Workload.do_free's work, inlined as in `_thread_slow` (the declined
                    # fast path did nothing: `now` is still the thread's time)
                    t.stalled_since = now
                    yield from free(t, cache, obj)
                    t.stalled_since = None
                    (tf1 if cache is single else tallies(cache)[1])[env._now + t.pending - now] += 1
                    self.frees += 1
                    limit = -1
            elif len(live) < target:
                cache = single or caches[rng.choice_index(cum)]
                if atomic:
                    t.preempt_count += 1   # kfpu_begin(): preempt_disable()
                obj = alloc_fast(t, cache, flags)
                if obj is not None:
                    if counted:
                        na += 1
                    else:
                        ns = t.pending - pending
                        if ns == ua:
                            na += 1
                        else:
                            (ta1 if cache is single else tallies(cache)[0])[ns] += 1
                            self.allocs += 1
                    seq += 1
                    if not drawn:
                        drawn = lifetimes()
                    heappush(live, (env._now + t.pending + drawn.pop(), seq, obj, cache))
                else:
                    if na or nf:
                        self.count_hits(single, hit_ns, na, nf)
                        na = nf = 0
                    # Workload.do_alloc's work, inlined as `do_free`'s above
                    t.stalled_since = now
                    obj = yield from alloc(t, cache, flags)
                    t.stalled_since = None
                    (ta1 if cache is single else tallies(cache)[0])[env._now + t.pending - now] += 1
                    limit = -1
                    if obj is None:
                        self.count_failure(cache)
                    else:
                        self.allocs += 1
                        seq += 1
                        if not drawn:
                            drawn = lifetimes()
                        heappush(live, (env._now + t.pending + drawn.pop(), seq, obj, cache))
                if atomic:
                    t.preempt_count -= 1
            else:
                if na or nf:
                    self.count_hits(single, hit_ns, na, nf)
                    na = nf = 0
                yield from t.sleep(min(live[0][0], stop) - now)
                limit = -1
                continue
            if think:
                t.charge_ns(think)
            if t.pending >= limit:
                irqs = cpu.irqs
                limit = 0 if cpu.runq else (
                    min(tick, irqs[0].at - env._now) if irqs else tick)
                if t.pending >= limit:
                    if na or nf:
                        self.count_hits(single, hit_ns, na, nf)
                        na = nf = 0
                    yield from t.checkpoint()
                    limit = -1
        if na or nf:
            self.count_hits(single, hit_ns, na, nf)

    def _thread_slow(self, t: Thread) -> Gen:
        """`_thread` for a policy with no fast path: every allocation and free is the policy's
        generator path, counted and tallied as `Workload.do_alloc` / `do_free` do (their work
        inlined: one generator level less for every event the operation waits on). The same
        decisions, draws, counts, tallies and checkpoints as `_thread` when every fast path
        declines; after each operation the checkpoint's test is made afresh, as `_thread`
        does after a slow path."""
        p: SteadyParams = self.params
        rng = self.machine.rng(f"{t.name}")
        lifetimes = p.lifetime.blocks(rng)
        drawn: list[int] = []
        caches, cum = self._caches, self._cum
        single = caches[0] if len(caches) == 1 else None
        stop = p.stop if p.stop is not None else 1 << 62
        target = p.live_objects
        think = p.think
        flags = self._flags
        live: list[tuple[int, int, int, Any]] = []
        seq = 0
        alloc, free = self.policy.alloc, self.policy.free
        tallies = self._tallies
        ta1, tf1 = tallies(single) if single is not None else (None, None)
        heappush, heappop = heapq.heappush, heapq.heappop
        atomic = p.preempt_disabled
        cpu = t.cpu
        env = t.env
        tick = self.machine.tick_ns
        if p.start:
            yield from t.sleep(p.start - t.now)
        while True:
            now = env._now + t.pending
            if now >= stop:
                break
            if live and live[0][0] <= now:
                # the earliest death is due: free that object (Workload.do_free's work)
                _death, _s, obj, cache = heappop(live)
                t.stalled_since = now
                yield from free(t, cache, obj)
                t.stalled_since = None
                (tf1 if cache is single else tallies(cache)[1])[env._now + t.pending - now] += 1
                self.frees += 1
            elif len(live) < target:
                # below the target population: allocate (Workload.do_alloc's work) and draw
                # the new object's death
                cache = single or caches[rng.choice_index(cum)]
                if atomic:
                    t.preempt_count += 1   # kfpu_begin(): preempt_disable()
                t.stalled_since = now
                obj = yield from alloc(t, cache, flags)
                t.stalled_since = None
                (ta1 if cache is single else tallies(cache)[0])[env._now + t.pending - now] += 1
                if obj is None:
                    self.count_failure(cache)
                else:
                    self.allocs += 1
                    seq += 1
                    if not drawn:
                        drawn = lifetimes()
                    heappush(live, (env._now + t.pending + drawn.pop(), seq, obj, cache))
                if atomic:
                    t.preempt_count -= 1
            else:
                # at the target and no death due: sleep until the next one (or the stop)
                yield from t.sleep(min(live[0][0], stop) - now)
                continue
            if think:
                t.charge_ns(think)
            # Thread.checkpoint's own test, so that it is entered only when it is due
            if cpu.runq or t.pending >= tick or (
                    cpu.irqs and cpu.irqs[0].at - env._now <= t.pending):
                yield from t.checkpoint()
