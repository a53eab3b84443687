"""One experiment run: build the machine, policy, caches and workloads from a validated
`Experiment`, run it with a progress bar, and write the run folder.

Run folder (see results/README.md): config.toml, summary.json, timeline.parquet,
events.parquet, histograms.parquet, lock_stat.txt, slabinfo.txt, the policy's own reports, and
deadlock.txt when the run ended in a deadlock. Same config and seed give byte-identical files:
nothing that depends on wall time is written (the wall-clock figures are printed instead).
"""

from __future__ import annotations

import gc
import json
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from experiments.config import ConfigError, Experiment, resolved_dict
from experiments.events import schedule_events
from experiments.output import RunFolder, StagedFolder
from experiments.reports import format_lock_stat, format_slabinfo, merge_lock_stats
from policies import registry as policy_registry
from policies.base import CacheSpec, InvariantError, Policy
from simcore.costs import CostTable
from simcore.deadlock import DeadlockReport, SimulationDeadlock
from simcore.machine import Machine, MachineConfig
from simcore.memory import FailWindow, MemoryConfig
from simcore.metrics import SamplingConfig
from simcore.spinlock import LockStat
from simcore.trace import TraceRecorder
from workloads import registry as workload_registry
from workloads.base import Workload

EXIT_DEADLOCK = 3
"""Exit status of `kmemsim run` when the run ended in a detected deadlock."""


@dataclass
class Simulation:
    """Everything a run consists of, built but not yet run."""

    exp: Experiment
    machine: Machine
    policy: Policy
    caches: dict[str, Any]
    workloads: list[Workload]


@dataclass
class RunResult:
    """What a run produced."""

    out: Path | None
    summary: dict[str, Any]
    status: str
    """ok, deadlock or error."""
    wall_seconds: float
    deadlock: DeadlockReport | None = None

    @property
    def ops(self) -> int:
        o = self.summary["ops"]
        return o["allocs"] + o["frees"]

    @property
    def ops_per_wall_second(self) -> float:
        return self.ops / self.wall_seconds if self.wall_seconds > 0 else 0.0


def build(exp: Experiment) -> Simulation:
    """Machine, policy, caches and workloads for `exp` (nothing runs yet)."""
    mc = exp.machine
    mem = exp.memory
    machine = Machine(
        MachineConfig(nodes=mc.nodes, cpus_per_node=mc.cpus_per_node, hz=mc.hz,
                      sched_slice=mc.sched_slice, batching=mc.batching, fast_paths=mc.fast_paths,
                      preempt=mc.preempt, sched_wakeup_granularity=mc.sched_wakeup_granularity,
                      sched_latency=mc.sched_latency,
                      hung_task_timeout=mc.hung_task_timeout,
                      deadlock_check=mc.deadlock_check,
                      deadlock_timed_limit=mc.deadlock_timed_limit),
        costs=CostTable.build(exp.costs), seed=exp.seed,
        memory_config=MemoryConfig(
            total_bytes=mem.size, page_size=mem.page_size, watermark_min=mem.watermark_min,
            watermark_low=mem.watermark_low, watermark_high=mem.watermark_high,
            reclaimable_bytes=mem.reclaimable, fail_probability=mem.fail_probability,
            fail_windows=[FailWindow(w.start, w.end, w.probability) for w in mem.fail_windows]),
        sampling=SamplingConfig(exp.sampling.interval, exp.sampling.max_samples,
                                exp.sampling.max_events))
    policy = policy_registry.get(exp.policy.name)(machine, exp.policy.tunables)
    caches = {}
    for c in exp.caches:
        try:
            caches[c.name] = policy.cache_create(CacheSpec(c.name, c.size, c.align, c.ctor_cost,
                                                           c.dtor_cost, tuple(c.flags)))
        except ValueError as exc:
            raise ConfigError(f"{exp.source}: caches: {c.name}: {policy.name} cannot create it: "
                              f"{exc}") from None
    workloads = [workload_registry.get(w.kind)(machine, policy, caches, p, i)
                 for i, (w, p) in enumerate(zip(exp.workloads, exp.workload_params, strict=True))]
    for i, w in enumerate(workloads):
        try:
            w.create_caches()
        except ValueError as exc:
            raise ConfigError(f"{exp.source}: workloads[{i}] ({w.kind}): {policy.name} cannot "
                              f"create its caches: {exc}") from None
    policy.start()
    for w in workloads:
        w.start()
    _add_probes(machine, policy, workloads)
    schedule_events(machine, policy, caches, exp.events)
    return Simulation(exp, machine, policy, caches, workloads)


def _add_probes(machine: Machine, policy: Policy, workloads: list[Workload]) -> None:
    tl = machine.metrics.timeline

    def cache_probe() -> dict[str, float]:
        out: dict[str, float] = {}
        for c in list(policy.caches):
            for k, v in policy.stats(c).row().items():
                out[f"{policy.cache_name(c)}.{k}"] = v
        return out

    last_locks: dict[str, dict[str, int]] = {}

    def lock_probe() -> dict[str, float]:
        out: dict[str, float] = {}
        for cls, locks in machine.metrics.lock_classes().items():
            # the class's cumulative columns: the sums over its instances (lock_stat's
            # aggregation, merge_lock_stats, for the columns the timeline keeps)
            cols = zip(*(lk.stat.sums() for lk in locks), strict=True)
            snap = dict(zip(LockStat.SNAPSHOT_KEYS, map(sum, cols), strict=True))
            prev = last_locks.get(cls, {})
            for k, v in snap.items():
                out[f"{cls}.{k}"] = v - prev.get(k, 0)
            last_locks[cls] = snap
        return out

    last_cpu = {"t": 0, "off": 0, "busy": 0, "ops": 0}

    def cpu_probe() -> dict[str, float]:
        now = machine.env.now
        off = sum(c.irq_off_total for c in machine.cpus)
        busy = sum(c.busy_ns for c in machine.cpus)
        ops = sum(w.allocs + w.frees for w in workloads)
        span = (now - last_cpu["t"]) * machine.ncpus
        out = {"irq_off_share": round((off - last_cpu["off"]) / span, 6) if span else 0.0,
               "busy_share": round((busy - last_cpu["busy"]) / span, 6) if span else 0.0,
               "ops": ops - last_cpu["ops"],
               "free_pages": machine.memory.free}
        last_cpu.update(t=now, off=off, busy=busy, ops=ops)
        return out

    tl.add_probe("cache", cache_probe)
    tl.add_probe("lock", lock_probe)
    tl.add_probe("cpu", cpu_probe)


def freeze_heap() -> None:
    """Move the objects built so far out of the cyclic collector's reach and make collections
    rarer: a simulation keeps millions of long-lived objects (threads, slabs, objects) whose
    repeated scanning would otherwise make large machines slower per operation."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def thaw_heap() -> None:
    """Undo `freeze_heap` so a finished simulation can be collected."""
    gc.unfreeze()
    gc.set_threshold(*_GC_DEFAULT)


_GC_DEFAULT = gc.get_threshold()


def _run_loop(sim: Simulation, progress: bool) -> DeadlockReport | None:
    m = sim.machine
    duration = sim.exp.duration
    steps = 200
    with tqdm(total=duration // 1_000_000 or 1, unit="ms", desc=f"{sim.exp.name} (sim time)",
              disable=not progress, delay=2.0, file=sys.stderr, leave=False) as bar:
        done = 0
        m.metrics.timeline.start()
        m.deadlock.start()
        for i in range(1, steps + 1):
            until = duration * i // steps
            if until <= m.env.now:
                continue
            try:
                m.env.run(until=until)
            except SimulationDeadlock as exc:
                return exc.report
            ms = until // 1_000_000
            bar.update(ms - done)
            done = ms
    return None


def _final_sample(sim: Simulation) -> None:
    """One last timeline row at the end of the run (or at the deadlock), so the timeline
    reaches the time the summary describes (the periodic sampler's sample at the end instant
    would only run after the simulation stopped)."""
    tl = sim.machine.metrics.timeline
    if tl.rows and tl.rows[-1]["time_ns"] < sim.machine.env.now:
        tl.sample()


def summarize(sim: Simulation, status: str, report: DeadlockReport | None,
              invariants: str) -> dict[str, Any]:
    """summary.json contents (deterministic: no wall-clock figures)."""
    m, policy = sim.machine, sim.policy
    m.metrics.fold()
    ncpu = m.ncpus
    end = m.env.now
    locks = {}
    for cls, lks in m.metrics.lock_classes().items():
        s = merge_lock_stats(cls, (lk.stat for lk in lks))
        locks[cls] = {"con_bounces": s.con_bounces, "contentions": s.contentions,
                      "waittime_min_ns": s.waittime_min, "waittime_max_ns": s.waittime_max,
                      "waittime_total_ns": s.waittime_total,
                      "waittime_avg_ns": round(s.waittime_avg, 3),
                      "acq_bounces": s.acq_bounces, "acquisitions": s.acquisitions,
                      "holdtime_min_ns": s.holdtime_min, "holdtime_max_ns": s.holdtime_max,
                      "holdtime_total_ns": s.holdtime_total,
                      "holdtime_avg_ns": round(s.holdtime_avg, 3),
                      "wait": m.metrics.hist(f"lock.{cls}.wait").summary(),
                      "hold": m.metrics.hist(f"lock.{cls}.hold").summary()}
    ops = {"allocs": sum(w.allocs for w in sim.workloads),
           "frees": sum(w.frees for w in sim.workloads),
           "alloc_failures": sum(w.failures for w in sim.workloads)}
    return {
        "experiment": sim.exp.name,
        "policy": policy.name,
        "seed": sim.exp.seed,
        "status": status,
        "invariants": invariants,
        "duration_ns": sim.exp.duration,
        "end_ns": end,
        "machine": {"nodes": m.nodes, "cpus": ncpu, "hz": m.hz, "batching": m.batching},
        "ops": ops,
        "workloads": [{"kind": w.kind, "label": w.label, **w.counts(),
                       "caches": w.cache_counts()} for w in sim.workloads],
        "caches": {policy.cache_name(c): cache_summary(sim, c) for c in policy.caches},
        "locks": locks,
        "cpu": {
            "irq_off_share": round(sum(c.irq_off_total for c in m.cpus) / (ncpu * end), 6)
            if end else 0.0,
            "irq_off_max_ns": max(c.irq_off_max for c in m.cpus),
            "busy_share": round(sum(c.busy_ns for c in m.cpus) / (ncpu * end), 6) if end else 0.0,
            "irqs": sum(c.irq_count for c in m.cpus),
            "irq_latency": m.irq_latency.summary(),
            "irq_off": m.irq_off.summary(),
        },
        "latency": {name: h.summary() for name, h in sorted(m.metrics.histograms.items())
                    if name not in ("irq_latency", "irq_off")
                    and not name.startswith(("lock.", "workload."))},
        "memory": {"total_pages": m.memory.total_pages, "free_pages": m.memory.free,
                   **m.memory.stats},
        "counters": dict(sorted(m.metrics.counters.items())),
        "events": dict(sorted(m.metrics.log.totals.items())),
        "events_dropped": dict(sorted(m.metrics.log.dropped.items())),
        "deadlock": None if report is None else {
            "kind": report.kind, "time_ns": report.time, "summary": report.summary,
            "cycle": report.cycle, "threads": [t.line().strip() for t in report.threads]},
    }


COMMON_CACHE_KEYS = ("allocs", "frees", "alloc_fail", "objs_inuse", "objs_cached", "objs_free",
                     "objs_emergency", "slabs", "bytes_requested", "bytes_total")
"""Per-cache summary keys every policy has, with one meaning: allocations, frees and failed
allocations the workloads made on the cache (counted by the workload layer), then the common
CacheStats numbers. Each kernel's own names (skc_obj_alloc, alloc, allochit...) follow."""


def cache_summary(sim: Simulation, cache: Any) -> dict[str, Any]:
    """summary.json's record of one cache: COMMON_CACHE_KEYS and the policy's own keys. Where
    a kernel's own counter has a common name but counts something else, it is kept as
    `<policy>.<name>`."""
    row = sim.policy.stats(cache).row()
    counts = [w.cache_totals(cache) for w in sim.workloads]
    common = {"allocs": sum(c[0] for c in counts), "frees": sum(c[1] for c in counts),
              "alloc_fail": sum(c[2] for c in counts)}
    common.update({k: row[k] for k in COMMON_CACHE_KEYS if k in row and k not in common})
    own = {k: v for k, v in row.items() if k not in common}
    if any(k in row and row[k] != common[k] for k in ("allocs", "frees", "alloc_fail")):
        own.update({f"{sim.policy.name}.{k}": row[k] for k in ("allocs", "frees", "alloc_fail")
                    if k in row})
    return {**common, **own}


def _events_frame(events: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for e in events:
        rest = {k: v for k, v in e.items() if k not in ("time_ns", "kind", "cpu", "cache")}
        rows.append({"time_ns": int(e["time_ns"]), "kind": str(e["kind"]),
                     "cpu": int(e.get("cpu", -1)), "cache": str(e.get("cache", "")),
                     "detail": json.dumps(rest, sort_keys=True, default=str)})
    return pd.DataFrame(rows, columns=["time_ns", "kind", "cpu", "cache", "detail"]).astype(
        {"time_ns": "int64", "cpu": "int64"})


def _histogram_frame(sim: Simulation) -> pd.DataFrame:
    rows = [r for _n, h in sorted(sim.machine.metrics.histograms.items()) for r in h.rows()]
    return pd.DataFrame(rows, columns=["histogram", "lo_ns", "hi_ns", "count"])


def merge_latency(sim: Simulation) -> None:
    """`latency.alloc` / `latency.free`: the sums of every workload's per-cache histograms."""
    hists = sim.machine.metrics.histograms
    for op in ("alloc", "free"):
        sim.machine.metrics.merge(f"latency.{op}", sorted(
            n for n in hists if n.startswith("workload.") and n.endswith(f".{op}")))


def write_outputs(sim: Simulation, folder: RunFolder, summary: dict[str, Any],
                  report: DeadlockReport | None) -> None:
    m, policy = sim.machine, sim.policy
    folder.write_json("summary.json", summary)
    folder.write_parquet("timeline.parquet", pd.DataFrame(m.metrics.timeline.rows))
    folder.write_parquet("events.parquet", _events_frame(m.metrics.log.events))
    folder.write_parquet("histograms.parquet", _histogram_frame(sim))
    classes = [merge_lock_stats(cls, (lk.stat for lk in lks))
               for cls, lks in m.metrics.lock_classes().items()]
    folder.write_text("lock_stat.txt", format_lock_stat(classes))
    reports = policy.reports()
    if "slabinfo.txt" not in reports:
        reports["slabinfo.txt"] = format_slabinfo([policy.stats(c) for c in policy.caches])
    for name, text in sorted(reports.items()):
        folder.write_text(name, text)
    if report is not None:
        folder.write_text("deadlock.txt", report.text())


def run_experiment(exp: Experiment, out: Path | None, progress: bool = False,
                   staged: bool = True, trace: TraceRecorder | None = None) -> RunResult:
    """Build and run `exp`; write the run folder to `out` (None: write nothing).

    With `staged` the folder is built in `.<name>.partial` and swapped into place when
    complete (see `StagedFolder`): an interrupt leaves the previous folder as it was, a rerun
    replaces it whole. Without it, files are written straight into `out`, which the caller
    stages (a scenario's variants, a sweep point). With `trace`, record the timeline trace
    and write it as trace.json. A run that fails with an internal error
    still gets its folder, with error.txt and a summary whose status is error."""
    folder: RunFolder | None = None
    if out is not None:
        folder = StagedFolder(out).open() if staged else RunFolder(out)
    stage = folder if isinstance(folder, StagedFolder) else None
    try:
        res = _run(exp, out, folder, progress, trace)
    except BaseException as exc:
        if stage is not None:
            # an internal error keeps its folder (error.txt, status error); bad input and an
            # interrupt leave the previous folder as it was
            crashed = isinstance(exc, Exception) and not isinstance(exc, ConfigError) and \
                "error.txt" in stage.written
            if crashed:
                stage.commit()
            else:
                stage.discard()
        raise
    if stage is not None:
        stage.commit()
    return res


def _run(exp: Experiment, out: Path | None, folder: RunFolder | None,
         progress: bool, trace: TraceRecorder | None) -> RunResult:
    sim = build(exp)
    if trace is not None:
        trace.attach(sim.machine)
    if folder is not None:
        folder.write_toml("config.toml", resolved_dict(exp))
    freeze_heap()
    t0 = time.perf_counter()
    try:
        report = _run_loop(sim, progress)
    except Exception:
        thaw_heap()
        if folder is not None:
            folder.write_text("error.txt", traceback.format_exc())
            merge_latency(sim)
            folder.write_json("summary.json", summarize(sim, "error", None, "not checked"))
        raise
    except BaseException:
        thaw_heap()
        raise
    wall = time.perf_counter() - t0
    thaw_heap()
    _final_sample(sim)
    merge_latency(sim)
    status = "ok" if report is None else "deadlock"
    invariants = "ok"
    if report is None:
        try:
            sim.policy.check_invariants()
        except InvariantError as exc:
            invariants = f"violated: {exc}"
    else:
        invariants = "not checked (deadlock)"
    summary = summarize(sim, status, report, invariants)
    if folder is not None:
        write_outputs(sim, folder, summary, report)
        if trace is not None:
            trace.finish(report)
            folder.write_text("trace.json", trace.text(sim.machine.env.now))
    return RunResult(out, summary, status, wall, report)
