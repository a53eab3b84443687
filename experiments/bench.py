"""`kmemsim bench`: how fast the simulator itself runs.

For each policy on `steady` (and `producer_consumer` when it exists) at several CPU counts, one
fresh process warms the experiment up, then measures a window of simulated time: simulated
alloc+free operations per wall-second, SimPy events per operation, wall cost per operation and
peak RSS. In the same process, in bursts between the window's steps, it measures the raw SimPy
rate of a one-process timeout loop; the ratio of the two says how many allocator operations the simulator completes for the price of one
bare SimPy event. Both are timed in the bench process's CPU time (`time.process_time`): on a
quiet machine that is its wall time, and on a shared one the other processes do not inflate
one measurement more than the other (the `wall_*` fields keep their names for the JSON's
readers).
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import simpy

from experiments.config import validate
from experiments.output import RunFolder, check_writable
from experiments.problems import ConfigError

OBJECT_SIZES = (256, 32768)
"""Object sizes (bytes) measured for every policy: 256 B, where the kernels' per-CPU layers
are deepest (illumos 7-round magazines, Linux SLAB array limit 120), and 32 KiB (illumos
1-round magazines, Linux SLAB limit 8, a 32 KiB SLUB slab holds one object)."""

POLICY_TUNABLES = {"spl": {"spl_kmem_cache_slab_limit": 0}}
"""Tunables the bench sets: the SPL with `spl_kmem_cache_slab_limit = 0` never hands a cache
to its Linux SLAB delegate (KMC_SLAB), so its own magazines are measured at 256 B too."""


@dataclass
class BenchPoint:
    policy: str
    workload: str
    cpus: int
    target_ops: int
    object_size: int = 32768
    warm_ticks: int = 0
    """Simulated ticks the warm-up may last at most (0: `WARM_TICKS_MAX`)."""


@dataclass
class BenchResult:
    policy: str
    workload: str
    cpus: int
    object_size: int
    """Bytes per object of the one cache."""
    ops: int
    """Simulated alloc+free operations in the measured window."""
    wall_s: float
    """CPU seconds of the measured window (wall seconds on a quiet machine)."""
    ops_per_wall_s: float
    events_per_op: float
    wall_ns_per_op: float
    raw_simpy_events_per_s: float
    ratio: float
    """ops per second / raw SimPy events per second, both in the process's CPU time."""
    peak_rss_mib: float
    warm_ops: int = 0
    """Operations run before the window (the warm-up until memory in use stopped growing)."""
    settled: bool = True
    """False when the warm-up ended after WARM_TICKS_MAX ticks with the cache still growing:
    the window then measures growth, not the steady state (the SPL at 1024 CPUs grows one
    slab at a time for about 130 ticks, its waiters woken together on every slab)."""


class RawSimPy:
    """The reference: one SimPy process yielding timeouts in a loop, run in bursts. `burst`
    runs `events` more of them and returns the CPU seconds they took (CPU time of this
    process, as for the measured window: on a quiet machine it equals wall time, on a shared
    one it is not inflated by the other processes)."""

    def __init__(self) -> None:
        self.env = simpy.Environment()
        self.env.process(self._loop())

    def _loop(self):  # type: ignore[no-untyped-def]
        while True:
            yield self.env.timeout(1)

    def burst(self, events: int) -> float:
        t0 = time.process_time()
        self.env.run(until=self.env.now + events)
        return time.process_time() - t0


def raw_simpy_rate(events: int = 300_000) -> float:
    """Events per CPU-second of the reference loop, in one burst."""
    return events / RawSimPy().burst(events)


RAW_BURST = 2000
"""Reference events per burst. The machine's speed drifts over seconds here (the reference
alone moves from 0.5 to 1.0 M events/s between consecutive 300,000-event runs), so the
reference runs in bursts after every step of the measured window, for a quarter of the step's
CPU time, not once after it, and the ratio compares the two under the same conditions."""


def bookkeeping_bound(ops: int = 300_000, cpus: int = 64) -> float:
    """Operations per CPU-second of the bench's steady work done in plain Python with no
    SimPy: per CPU a heap of live objects with exponential 400 ns lifetimes drawn in blocks,
    16 live objects, a LIFO magazine of 256 with refill and flush of half of it from a
    depot list, alloc/free counters and a local clock; the CPUs take turns in 1 ms slices.
    What the best CPython can do with the same bookkeeping: the simulator's ratio is read
    against `bound / raw SimPy rate`."""
    import heapq

    import numpy as np

    rng = np.random.default_rng(1)
    clocks = [0] * cpus
    lives: list[list[tuple[int, int, int]]] = [[] for _ in range(cpus)]
    mags: list[list[int]] = [list(range(c * 1000, c * 1000 + 128)) for c in range(cpus)]
    depot: list[int] = list(range(10**6, 10**6 + 100_000))
    draws: list[float] = []
    allocs = frees = seq = 0
    heappush, heappop = heapq.heappush, heapq.heappop
    t0 = time.process_time()
    while allocs + frees < ops:
        for c in range(cpus):
            now, live, mag = clocks[c], lives[c], mags[c]
            end = now + 1_000_000
            while now < end and allocs + frees < ops:
                if live and live[0][0] <= now:
                    obj = heappop(live)[2]
                    if len(mag) >= 256:
                        depot.extend(mag[:128])
                        del mag[:128]
                    mag.append(obj)
                    frees += 1
                    now += 17
                elif len(live) < 16:
                    if not mag:
                        mag.extend(depot[-128:])
                        del depot[-128:]
                    obj = mag.pop()
                    allocs += 1
                    now += 17
                    if not draws:
                        draws = (rng.standard_exponential(4096) * 400.0).tolist()
                    seq += 1
                    heappush(live, (now + int(draws.pop()), seq, obj))
                else:
                    now = live[0][0]
            clocks[c] = now
    return (allocs + frees) / (time.process_time() - t0)


WINDOW_STEPS = 20
"""Steps the measured window is cut into (each followed by the reference's bursts)."""

WARM_OPS_PER_CPU = 300
"""Operations every CPU has done, at least, before the window (on average)."""

WARM_TICKS_MAX = 16
"""Simulated ticks the warm-up lasts at most (unless `--warm-ticks` says otherwise) before the
window is measured even though the cache still grows: 16 slices up to 64 CPUs, 256 slices of
a sixteenth of a tick at 1024 CPUs (the same simulated time at every size, so that a bigger
machine's growth gets as long to end: Linux SLAB at 32 KiB and 1024 CPUs stops growing after
some 12 ticks; the SPL at 1024 CPUs needs about 130, `--warm-ticks 160`)."""


def warm_slice_ns(tick_ns: int, cpus: int) -> int:
    """The warm-up's slice of simulated time: a tick up to 64 CPUs, tick x 64 / CPUs beyond,
    so that a slice holds about the operations of a 64-CPU tick (at 1024 CPUs a tick of a
    magazine-hit policy is some 50 M operations, ten minutes of wall time, and the warm-up
    takes two at least)."""
    return tick_ns if cpus <= 64 else tick_ns * 64 // cpus


def cache_name(size: int) -> str:
    """The bench cache's name: bench_256, bench_32k."""
    return f"bench_{size // 1024}k" if size >= 1024 and size % 1024 == 0 else f"bench_{size}"


def experiment(point: BenchPoint, duration: int) -> dict[str, Any]:
    """The experiment file contents for one benchmark point."""
    wl: dict[str, Any]
    if point.workload == "steady":
        wl = {"kind": "steady", "live_objects": 16,
              "lifetime": {"dist": "exponential", "mean": "400ns"}}
    else:
        half = point.cpus // 2 or 1
        wl = {"kind": "producer_consumer", "producers": list(range(half)),
              "consumers": list(range(half, point.cpus)) or [0], "queue_limit": 64}
    policy: dict[str, Any] = {"name": point.policy}
    if point.policy in POLICY_TUNABLES:
        policy["tunables"] = dict(POLICY_TUNABLES[point.policy])
    return {
        "name": f"bench-{point.policy}-{point.workload}-{point.cpus}-{point.object_size}",
        "seed": 1,
        "duration": duration,
        "machine": {"nodes": 1, "cpus_per_node": point.cpus},
        "memory": {"size": "64GiB"},
        "policy": policy,
        "caches": [{"name": cache_name(point.object_size), "size": point.object_size}],
        "workloads": [wl],
        "sampling": {"interval": "10ms"},
    }


def _measure(point: BenchPoint) -> BenchResult:
    from experiments.run import build, freeze_heap

    # simulated time for the measured window, from a short calibration slice
    exp = validate(experiment(point, 10**12), Path("bench.toml"))
    sim = build(exp)
    freeze_heap()
    env = sim.machine.env
    ops_of = lambda: sum(w.allocs + w.frees for w in sim.workloads)  # noqa: E731
    # warm up a slice (a tick up to 64 CPUs) at a time until a slice adds no more than 0.1 %
    # to the pages in use (1024 magazines' random walk keeps setting new maxima by a page or
    # two) and no more than 5 % to the operations of the slice before, and every CPU has done
    # a few hundred operations: the window measures the steady state, not the cache's growth
    # towards it (at 64 CPUs the SPL's magazines and slabs fill for about 5 ms, its growth
    # waits would count as steady cost)
    # beyond 64 CPUs a slice is a fraction of a tick, and growth that adds a slab every few
    # slices (the SPL's, one slab at a time) would pass a slice-by-slice check in its quiet
    # slices: there the pages in use over the last tick's slices are held against the peak
    # before them (one slice, the same check, up to 64 CPUs)
    tick_ns = sim.machine.tick_ns
    slice_ns = warm_slice_ns(tick_ns, point.cpus)
    per_tick = max(1, tick_ns // slice_ns)
    memory = sim.machine.memory
    env.run(until=slice_ns)
    prev = ops_of()
    used_by_slice = [memory.used]
    settled = False
    for _ in range((point.warm_ticks or WARM_TICKS_MAX) * tick_ns // slice_ns):
        ops0 = ops_of()
        env.run(until=env.now + slice_ns)
        done = ops_of() - ops0
        used_by_slice.append(memory.used)
        peak = max(used_by_slice[:-per_tick] or used_by_slice[:1])
        if (max(used_by_slice[-per_tick:]) <= peak + peak // 1000 and done <= prev * 1.05
                and ops_of() >= point.cpus * WARM_OPS_PER_CPU):
            settled = True
            break
        prev = done
    warm_ops = ops_of()
    # the window: WINDOW_STEPS steps of simulated time sized from the last warm-up slice's
    # rate, until target_ops operations are done. Work a thread does ahead of the simulation
    # clock is counted when it yields, in the same env.run call that executed it, so the
    # operations counted are the operations the timed calls ran. After every step the
    # reference loop runs bursts for a quarter of the step's CPU time (see RAW_BURST)
    step_ns = max(1000, slice_ns * point.target_ops // (WINDOW_STEPS * max(done, 1)))
    ref = RawSimPy()
    ref_s = 0.0
    ref_events = 0
    ops0, ev0 = ops_of(), next(env._eid)
    wall = 0.0
    while ops_of() - ops0 < point.target_ops:
        t0 = time.process_time()
        env.run(until=env.now + step_ns)
        step = time.process_time() - t0
        wall += step
        spent = 0.0
        while spent < step / 4:
            spent += ref.burst(RAW_BURST)
            ref_events += RAW_BURST
        ref_s += spent
    ops = ops_of() - ops0
    events = next(env._eid) - ev0 - 1
    raw = ref_events / ref_s if ref_s else 0.0
    opw = ops / wall if wall else 0.0
    return BenchResult(point.policy, point.workload, point.cpus, point.object_size, ops,
                       round(wall, 4),
                       round(opw), round(events / ops, 4) if ops else 0.0,
                       round(wall * 1e9 / ops, 1) if ops else 0.0, round(raw),
                       round(opw / raw, 3) if raw else 0.0,
                       round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                       warm_ops, settled)


def _child(point: BenchPoint, conn: Any) -> None:
    try:
        conn.send(("ok", _measure(point)))
    except Exception as exc:  # reported as a failed point, the bench goes on
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    conn.close()


def run_point(point: BenchPoint) -> BenchResult | str:
    """Measure one point in a fresh process (so peak RSS is the point's own)."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(point, child))
    proc.start()
    child.close()
    status, value = parent.recv()
    proc.join()
    return value if status == "ok" else value


def points(quick: bool, cpus: list[int] | None = None, ops: int | None = None,
           sizes: list[int] | None = None, warm_ticks: int = 0) -> list[BenchPoint]:
    """The fixed benchmark set (or the CPU counts / operation target / object sizes given):
    every policy at every object size of `OBJECT_SIZES`."""
    from policies.registry import available as policies
    from workloads.registry import available as workloads

    cpus = cpus or ([4, 64] if quick else [4, 64, 256, 1024])
    target = ops or (200_000 if quick else 400_000)
    wls = ["steady"] + (["producer_consumer"] if "producer_consumer" in workloads() else [])
    if quick:
        wls = wls[:1]
    return [BenchPoint(p, w, n, target, size, warm_ticks) for p in sorted(policies())
            for size in sizes or OBJECT_SIZES for w in wls for n in cpus]


def format_table(results: list[BenchResult]) -> str:
    head = (f"{'policy':12} {'workload':18} {'cpus':>5} {'size':>6} {'ops':>9} {'wall s':>7} "
            f"{'ops/wall-s':>11} {'events/op':>9} {'ns/op':>7} {'raw simpy ev/s':>14} "
            f"{'ratio':>6} {'peak MiB':>8}")
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{r.policy:12} {r.workload:18} {r.cpus:5d} {r.object_size:6d} "
                     f"{r.ops:9d} {r.wall_s:7.2f} "
                     f"{r.ops_per_wall_s:11,d} {r.events_per_op:9.3f} {r.wall_ns_per_op:7.0f} "
                     f"{r.raw_simpy_events_per_s:14,d} {r.ratio:6.2f} {r.peak_rss_mib:8.1f}"
                     + ("" if r.settled else "  growing"))
    if not all(r.settled for r in results):
        lines.append("growing: the cache still grew at the end of the warm-up (--warm-ticks, "
                     f"default {WARM_TICKS_MAX}), so that window measures growth, not the "
                     "steady state")
    return "\n".join(lines)


def main(quick: bool, out: Path, only: list[str] | None = None, cpus: list[int] | None = None,
         ops: int | None = None, workload: str | None = None,
         sizes: list[int] | None = None, warm_ticks: int = 0) -> int:
    from policies.registry import available as policies

    unknown = [p for p in only or [] if p not in policies()]
    if unknown:
        known = ", ".join(sorted(policies()))
        raise ConfigError([f"--policy {p}: unknown policy (known: {known})" for p in unknown])
    if out.is_dir():
        raise ConfigError(f"--json {out}: is a directory")
    check_writable(out.parent, "--json", out)
    pts = [p for p in points(quick, cpus, ops, sizes, warm_ticks)
           if (not only or p.policy in only) and (not workload or p.workload == workload)]
    if not pts:
        raise ConfigError(f"--workload {workload}: no benchmark points (workloads: "
                          f"{', '.join(sorted({p.workload for p in points(quick, cpus, ops)}))})")
    results: list[BenchResult] = []
    failed: list[dict[str, Any]] = []
    for i, p in enumerate(pts, 1):
        print(f"[{i}/{len(pts)}] {p.policy} {p.workload} {p.cpus} CPUs {p.object_size} B ...",
              file=sys.stderr, flush=True)
        r = run_point(p)
        if isinstance(r, BenchResult):
            results.append(r)
            print(f"    {r.ops_per_wall_s:,d} ops/wall-s, {r.events_per_op:.3f} events/op, "
                  f"{r.wall_ns_per_op:.0f} ns/op", file=sys.stderr, flush=True)
        else:
            failed.append({**asdict(p), "error": r})
            print(f"    failed: {r}", file=sys.stderr)
        # rewritten (atomically) after every point: a long bench cut short keeps what it has
        RunFolder(out.parent).write_json(out.name, {"results": [asdict(x) for x in results],
                                                    "failed": failed, "quick": quick,
                                                    "complete": i == len(pts)})
    print(format_table(results))
    raw = raw_simpy_rate()
    bound = bookkeeping_bound()
    print(f"bookkeeping bound: the steady work in plain Python (no SimPy) runs {bound:,.0f} "
          f"ops per CPU-second = {bound / raw:.2f}x the raw SimPy rate ({raw:,.0f} events/s)")
    for f in failed:
        print(f"FAILED {f['policy']} {f['workload']} {f['cpus']} {f['object_size']} B: "
              f"{f['error']}")
    print(f"wrote {out}")
    return 1 if failed else 0
