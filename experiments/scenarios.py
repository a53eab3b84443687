"""`kmemsim scenario`: the shipped deadlock and emergency-path scenarios.

A scenario is an experiment file under `experiments/configs/scenarios/` with a `[scenario]`
table that the experiment layer does not see:

    [scenario]
    summary = "one line for --list"
    plot = ["cache.*.objs_emergency", "lock.*.contentions"]   # timeline columns (globs)
    markers = ["deadlocked_set", "deadlocked_clear"]            # event kinds drawn as lines
    narrate = ["grow_start", "deadlocked_set", ...]             # event kinds the narrative tells
    facts = ["long_wait_share"]                                 # computed figures (see FACTS)

    [[scenario.variants]]
    name = "noemergency"
    summary = "KMC_NOEMERGENCY: the caller keeps waiting"
    set = { "caches[0].flags" = ["KMC_NOEMERGENCY"] }           # overrides, as --set
    expect = { status = "deadlock" }                            # see experiments.expectations

Each variant runs into `<out>/<variant>/` (a normal run folder). The scenario folder gets
`timeline.png` (one panel per variant, the chosen series with event markers), `narrative.md`
(what happened, when, with the numbers, generated from each variant's event log and summary)
and `scenario.json` (status, facts and whether the expectation was met, per variant, which
tests read). The whole folder is built aside and swapped into place when complete.
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import json
import os
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd

from experiments import expectations, tracing
from experiments.config import ConfigError, _set_path, load_raw, validate
from experiments.output import RunFolder, StagedFolder
from experiments.run import RunResult, run_experiment
from experiments.scenario_data import cache_sum as _cache_sum
from experiments.scenario_data import cache_total as _cache_total
from experiments.slub_facts import SLUB_FACTS
from experiments.spl_facts import SPL_FACTS
from simcore.units import format_duration, plural

SCENARIO_DIR = Path(__file__).parent / "configs" / "scenarios"


@dataclass
class Variant:
    name: str
    summary: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)
    expect: expectations.Expectation = field(default_factory=expectations.Expectation)
    """What the variant is expected to reproduce (status ok by default)."""
    default: bool = True
    """Run when no variant is named; `default = false` (the `*-compressed` variants) runs only
    with `--variant NAME` or `--all`."""


@dataclass
class Scenario:
    """A scenario file: the base experiment, its variants and what to show."""

    name: str
    path: Path
    summary: str
    base: dict[str, Any]
    variants: list[Variant]
    plot: list[str]
    markers: list[str]
    narrate: list[str]
    facts: list[str]


_SCENARIO_KEYS = {"summary", "plot", "markers", "narrate", "facts", "variants"}


def load(path: Path) -> Scenario:
    """Read a scenario file; ConfigError naming the problem if it is not one."""
    raw = load_raw(path)
    sc = raw.pop("scenario", None)
    if not isinstance(sc, dict):
        raise ConfigError(f"{path}: missing [scenario] table")
    for key in sc:
        if key not in _SCENARIO_KEYS:
            raise ConfigError(f"{path}: scenario.{key}: unknown key")
    variants = []
    for i, v in enumerate(sc.get("variants") or [{"name": "default"}]):
        if not isinstance(v, dict) or "name" not in v:
            raise ConfigError(f"{path}: scenario.variants[{i}]: needs a name")
        extra = set(v) - {"name", "summary", "set", "expect", "default"}
        if extra:
            raise ConfigError(f"{path}: scenario.variants[{i}].{sorted(extra)[0]}: unknown key")
        expect = expectations.parse(path, f"scenario.variants[{i}].expect", v.get("expect"),
                                    set(FACTS))
        default = v.get("default", True)
        if not isinstance(default, bool):
            raise ConfigError(f"{path}: scenario.variants[{i}].default: must be true or false, "
                              f"not {default!r}")
        if default and v["name"].endswith("-compressed"):
            raise ConfigError(f"{path}: scenario.variants[{i}].default: a -compressed variant "
                              f"shortens a kernel interval and must say default = false")
        variants.append(Variant(v["name"], v.get("summary", ""), dict(v.get("set", {})),
                                expect, default))
    if not any(v.default for v in variants):
        raise ConfigError(f"{path}: scenario.variants: every variant says default = false "
                          f"(at least one must run by default)")
    for fact in sc.get("facts", []):
        if fact not in FACTS:
            raise ConfigError(f"{path}: scenario.facts: unknown fact {fact!r} "
                              f"(known: {', '.join(sorted(FACTS))})")
    return Scenario(path.stem, path, sc.get("summary", ""), raw, variants,
                    list(sc.get("plot", [])), list(sc.get("markers", [])),
                    list(sc.get("narrate", [])), list(sc.get("facts", [])))


def available(directory: Path = SCENARIO_DIR) -> dict[str, Path]:
    """Shipped scenarios by name."""
    return {p.stem: p for p in sorted(directory.glob("*.toml"))}


def experiment_for(sc: Scenario, variant: Variant, seed: int | None = None) -> Any:
    """The validated experiment of one variant."""
    data = copy.deepcopy(sc.base)
    for dotted, value in variant.overrides.items():
        _set_path(data, dotted, value, who=f"{sc.path}: variant {variant.name}: set {dotted}")
    if seed is not None:
        data["seed"] = seed
    data["name"] = f"{sc.name}-{variant.name}"
    return validate(data, sc.path)


@dataclass
class VariantResult:
    variant: Variant
    result: RunResult
    folder: Path
    events: pd.DataFrame
    timeline: pd.DataFrame
    facts: dict[str, Any]
    unmet: list[str] = field(default_factory=list)
    """What the variant did not reproduce of its expectation, one line each."""
    caches: list[str] = field(default_factory=list)
    """The experiment's own caches (its [[caches]]), not the allocator's internal ones."""


def run_variant(exp: Any, folder: str,
                trace: tuple[bool, tuple[int, int | None] | None, int] | None,
                progress: bool = False) -> RunResult:
    """Run one variant's validated experiment into `folder` (unstaged: the caller stages the
    scenario's folder); with `trace` (--trace, --trace-window, --trace-events) run it again
    recording the trace of its key window. A module-level function, so a process pool can
    run the variants side by side."""
    res = run_experiment(exp, Path(folder), progress=progress, staged=False)
    if trace is not None:
        args = argparse.Namespace(trace=trace[0], trace_window=trace[1], trace_events=trace[2])
        if tracing.wanted(args):
            window = tracing.key_window(res.summary,
                                        pd.read_parquet(Path(folder) / "events.parquet"))
            res = run_experiment(exp, Path(folder), progress=progress, staged=False,
                                 trace=tracing.recorder(args, window))
    return res


def run(sc: Scenario, out: Path, only: list[str] | None = None, seed: int | None = None,
        progress: bool = False, trace: argparse.Namespace | None = None,
        everything: bool = False, jobs: int | None = None) -> list[VariantResult]:
    """Run the scenario's variants (its default ones; those named in `only`; every one with
    `everything`) and write the plot, narrative and scenario.json into `out`. With `trace`
    (the --trace arguments), each variant's folder also gets trace.json
    (experiments.tracing). The variants run side by side on `jobs` processes (default: every
    core); each is its own simulation, so its folder is the same however many run at once."""
    if only:
        chosen = [v for v in sc.variants if v.name in only]
    else:
        chosen = [v for v in sc.variants if v.default or everything]
    if only:
        unknown = set(only) - {v.name for v in sc.variants}
        if unknown:
            known = ", ".join(v.name for v in sc.variants)
            raise ConfigError(f"{sc.path}: no variant {sorted(unknown)[0]!r} (known: {known})")
    exps = [(v, experiment_for(sc, v, seed)) for v in chosen]
    targs = None if trace is None else (trace.trace, trace.trace_window, trace.trace_events)
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(exps)))
    staged = StagedFolder(out).open()
    try:
        runs: dict[str, RunResult] = {}
        if jobs == 1:
            for i, (v, exp) in enumerate(exps, 1):
                if progress:  # which variant the run's own bar (simulated time) is for
                    print(f"{sc.name}: variant {i}/{len(exps)}: {v.name}", file=sys.stderr)
                runs[v.name] = run_variant(exp, str(staged.path / v.name), targs, progress)
        else:
            runs = _run_side_by_side(sc, exps, staged.path, targs, jobs, progress)
        results = []
        for v, exp in exps:
            folder = staged.path / v.name
            res = runs[v.name]
            events = pd.read_parquet(folder / "events.parquet")
            timeline = pd.read_parquet(folder / "timeline.parquet")
            vr = VariantResult(v, res, folder, events, timeline, {},
                               caches=[c.name for c in exp.caches])
            names = list(dict.fromkeys([*sc.facts, *v.expect.facts]))
            vr.facts = {name: FACTS[name](vr) for name in names}
            vr.unmet = v.expect.failures(res.status, vr.facts)
            results.append(vr)
        staged.write_text("narrative.md", narrative(sc, results))
        staged.write_text("scenario.json", json.dumps(
            {"scenario": sc.name, "variants": {
                r.variant.name: {"status": r.result.status, "facts": r.facts,
                                 "expected": r.variant.expect.status, "unmet": r.unmet,
                                 "deadlock": None if r.result.deadlock is None
                                 else r.result.deadlock.text()}
                for r in results}}, indent=2, sort_keys=True) + "\n")
        plot(sc, results, staged)
    except BaseException:
        staged.discard()
        raise
    staged.commit()
    for vr in results:
        vr.folder = out / vr.variant.name
    return results


def _run_side_by_side(sc: Scenario, exps: list[tuple[Variant, Any]], root: Path,
                      trace: tuple[bool, tuple[int, int | None] | None, int] | None,
                      jobs: int, progress: bool) -> dict[str, RunResult]:
    """The variants on a pool of `jobs` fresh processes; a bar counts finished variants."""
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(exps), unit="variant", desc=f"{sc.name} ({jobs} at once)",
                   file=sys.stderr)
    runs: dict[str, RunResult] = {}
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(run_variant, exp, str(root / v.name), trace): v.name
                   for v, exp in exps}
        try:
            for f in as_completed(futures):
                runs[futures[f]] = f.result()
                if bar is not None:
                    bar.update(1)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        finally:
            if bar is not None:
                bar.close()
    return runs


# --- facts: figures a scenario's narrative and tests need -------------------------------------

def _kind_times(vr: VariantResult, kind: str) -> list[int]:
    return [int(x) for x in vr.events.loc[vr.events.kind == kind, "time_ns"]]


def _first(vr: VariantResult, kind: str) -> int | None:
    times = _kind_times(vr, kind)
    return times[0] if times else None


def _detail(vr: VariantResult, kind: str) -> list[dict[str, Any]]:
    return [json.loads(d) for d in vr.events.loc[vr.events.kind == kind, "detail"]]


def _max_column(vr: VariantResult, pattern: str) -> float:
    cols = [c for c in vr.timeline.columns if fnmatch.fnmatch(c, pattern)]
    if not cols:
        return 0.0
    return float(vr.timeline[cols].max().max())


def _hist(vr: VariantResult, name: str) -> pd.DataFrame:
    h = pd.read_parquet(vr.folder / "histograms.parquet")
    return h[h.histogram == name]


def fact_long_wait_share(vr: VariantResult) -> float:
    """Share of the time spent in spl_cache_grow that went to waits of 100 ms or more
    (zfs#9989's funclatency measure: ~70 %)."""
    counters = vr.result.summary.get("counters", {})
    total = counters.get("spl.cache_grow_ns", 0)
    return round(counters.get("spl.grow_wait_long_ns", 0) / total, 4) if total else 0.0


def fact_grow_wait_fast_share(vr: VariantResult) -> float:
    """Share of spl_cache_grow's waits that ended within 1 ms."""
    counters = vr.result.summary.get("counters", {})
    waits = int(vr.result.summary["latency"].get("spl.grow_wait", {}).get("count", 0))
    return round(counters.get("spl.grow_wait_fast", 0) / waits, 4) if waits else 0.0


def fact_grow_waits(vr: VariantResult) -> int:
    """Growth waits (wait_event_timeout calls in spl_cache_grow)."""
    return int(vr.result.summary["latency"].get("spl.grow_wait", {}).get("count", 0))


def fact_grow_wait_p50(vr: VariantResult) -> float:
    """Median growth wait, ns (highest value of its log-linear bucket, within 1 %)."""
    return vr.result.summary["latency"].get("spl.grow_wait", {}).get("p50", 0.0)


def fact_grow_wait_max(vr: VariantResult) -> int:
    """Longest growth wait, ns."""
    return int(vr.result.summary["latency"].get("spl.grow_wait", {}).get("max", 0))


def fact_alloc_p99(vr: VariantResult) -> float:
    """99th percentile allocation latency, ns (highest value of its log-linear bucket, within 1 %)."""
    return vr.result.summary["latency"]["latency.alloc"]["p99"]


def fact_deadlocked_after(vr: VariantResult) -> int | None:
    """How long the waiter that marked the cache DEADLOCKED had waited for growth, ns."""
    sets = _detail(vr, "deadlocked_set")
    return sets[0]["waited"] if sets else None


def fact_grow_queue_delay_max(vr: VariantResult) -> int:
    """Longest time a growth task waited in the taskq queue for a free worker, ns."""
    return max((d["queued"] for d in _detail(vr, "grow_run")), default=0)


def fact_caches_deadlocked(vr: VariantResult) -> list[str]:
    """Caches that were marked DEADLOCKED at least once."""
    return sorted({c for c in vr.events.loc[vr.events.kind == "deadlocked_set", "cache"]})


def fact_emergency_max(vr: VariantResult) -> int:
    """Most emergency objects outstanding at once (skc_obj_emergency_max over all caches)."""
    best = 0
    for c in vr.result.summary.get("caches", {}).values():
        best = max(best, int(c.get("skc_obj_emergency_max", c.get("objs_emergency", 0)) or 0))
    return max(best, int(_max_column(vr, "cache.*.objs_emergency")))


def fact_emergency_left(vr: VariantResult) -> int:
    """Emergency objects still outstanding at the end."""
    return _cache_sum(vr, "objs_emergency")


def fact_sleeps_in_atomic(vr: VariantResult) -> int:
    """Times a thread slept with IRQs off, preemption off or in an interrupt handler."""
    return int(vr.result.summary.get("counters", {}).get("sched.sleep_in_atomic", 0))


def fact_age_skipped(vr: VariantResult) -> int:
    """spl-0.7 aging: magazine age-outs skipped because skc_lock was contended."""
    return _cache_sum(vr, "age_skipped")


def fact_age_outs(vr: VariantResult) -> int:
    """spl-0.7 aging: magazines the aging IPI flushed (spl_magazine_age age-outs), counted
    over the whole run (the event log may keep fewer)."""
    return int(vr.result.summary.get("events", {}).get("magazine_age", 0))


def _skc_locks(vr: VariantResult) -> list[dict[str, Any]]:
    return [v for k, v in vr.result.summary.get("locks", {}).items() if k.endswith("skc_lock")]


def fact_skc_lock_contentions(vr: VariantResult) -> int:
    """Contended acquisitions of skc_lock (lock_stat contentions), all caches."""
    return sum(int(v["contentions"]) for v in _skc_locks(vr))


def fact_skc_lock_wait_ns(vr: VariantResult) -> int:
    """Total time spent spinning for skc_lock, ns (lock_stat waittime-total)."""
    return sum(int(v["waittime_total_ns"]) for v in _skc_locks(vr))


def fact_alloc_mean_ns(vr: VariantResult) -> float:
    """Mean allocation latency, ns."""
    return vr.result.summary["latency"]["latency.alloc"]["mean"]


def fact_allocs(vr: VariantResult) -> int:
    """Allocations completed."""
    return int(vr.result.summary["ops"]["allocs"])


def fact_nosleep_failures(vr: VariantResult) -> int:
    """Allocations that returned NULL."""
    return int(vr.result.summary["ops"]["alloc_failures"])


def fact_grown(vr: VariantResult) -> int:
    """Slabs created (Linux SLAB `grown`, all caches)."""
    return _cache_sum(vr, "grown")


def fact_free_limit_destroyed(vr: VariantResult) -> int:
    """Slabs destroyed by free_block because the node held more than free_limit free objects."""
    return _cache_sum(vr, "free_limit_destroyed")


def fact_reaped(vr: VariantResult) -> int:
    """Slabs destroyed by the periodic reaper (Linux SLAB `reaped`, all caches)."""
    return _cache_sum(vr, "reaped")


def fact_pages_freed(vr: VariantResult) -> int:
    """Pages returned to the page allocator."""
    return int(vr.result.summary.get("memory", {}).get("free_pages", 0))


def fact_irq_off_max_ns(vr: VariantResult) -> int:
    """Longest IRQ-disabled section on any CPU, ns."""
    return int(vr.result.summary["cpu"]["irq_off_max_ns"])


def fact_list_lock_hold_max(vr: VariantResult) -> int:
    """Longest hold of a Linux SLAB list_lock, ns (lock_stat holdtime-max)."""
    return max((int(v["holdtime_max_ns"]) for k, v in vr.result.summary.get("locks", {}).items()
                if k.endswith("list_lock")), default=0)


def fact_list_lock_hold_total(vr: VariantResult) -> int:
    """Total time list_locks were held, ns (lock_stat holdtime-total)."""
    return sum(int(v["holdtime_total_ns"]) for k, v in vr.result.summary.get("locks", {}).items()
               if k.endswith("list_lock"))


def _load_end(vr: VariantResult) -> int:
    tl = vr.timeline
    busy = tl.loc[tl["cpu.ops"] > 0, "time_ns"]
    return int(busy.max()) if len(busy) else 0


def _zero_after(vr: VariantResult, suffix: str) -> int | None:
    tl = vr.timeline
    end = _load_end(vr)
    after = tl[(tl.time_ns > end) & (_cache_total(vr, suffix) == 0)]
    return int(after.time_ns.iloc[0]) - end if len(after) else None


def fact_cached_zero_after(vr: VariantResult) -> int | None:
    """Time from the end of the load until no object is cached in any array or magazine, ns
    (at sampling resolution; None if never)."""
    return _zero_after(vr, ".objs_cached")


def fact_arrays_zero_after(vr: VariantResult) -> int | None:
    """Linux SLAB: time from the end of the load until every per-CPU array is empty, ns."""
    return _zero_after(vr, ".array_avail")


def fact_shared_zero_after(vr: VariantResult) -> int | None:
    """Linux SLAB: time from the end of the load until every shared array is empty, ns."""
    return _zero_after(vr, ".shared_avail")


def fact_slabs_zero_after(vr: VariantResult) -> int | None:
    """Time from the end of the load until every slab is returned to the page allocator, ns
    (at sampling resolution; None if never)."""
    return _zero_after(vr, ".slabs")


def fact_slabs_peak(vr: VariantResult) -> int:
    """Most slabs the caches held at once."""
    return int(_cache_total(vr, ".slabs").max() or 0)


def fact_slabs_end(vr: VariantResult) -> int:
    """Slabs held at the end of the run."""
    slabs = _cache_total(vr, ".slabs")
    return int(slabs.iloc[-1]) if len(slabs) else 0


def fact_consolidator_yes(vr: VariantResult) -> int:
    """Buffers the consolidator moved (move callbacks answered YES)."""
    return sum(1 for d in _detail(vr, "consolidator_move") if d.get("response") == "YES")


def fact_slabs_after_first_episode(vr: VariantResult) -> int | None:
    """Slabs held 2 ms after the first pressure episode ended (None: no episode ended)."""
    end = _first(vr, "pressure_end")
    if end is None:
        return None
    slabs = _cache_total(vr, ".slabs")[vr.timeline.time_ns >= end + 2_000_000]
    return int(slabs.iloc[0]) if len(slabs) else None


def _own_resizes(vr: VariantResult) -> list[dict[str, Any]]:
    ev = vr.events[(vr.events.kind == "magazine_resize") & vr.events.cache.isin(vr.caches)]
    return [json.loads(d) for d in ev.detail]


def fact_magazine_resizes(vr: VariantResult) -> int:
    """Magazine resizes (kmem_cache_magazine_resize) of the experiment's caches (not of the
    allocator's own kmem_magazine_<N> caches)."""
    return len(_own_resizes(vr))


def fact_magazine_sizes(vr: VariantResult) -> list[int]:
    """Magazine sizes the experiment's cache went through, in order (first is the starting
    size)."""
    d = _own_resizes(vr)
    return [d[0]["old"], *[x["new"] for x in d]] if d else []


def _window_rate(vr: VariantResult, pattern: str, first: bool) -> float:
    tl = vr.timeline
    cols = [c for c in tl.columns if fnmatch.fnmatch(c, pattern)]
    if not cols or len(tl) < 5:
        return 0.0
    k = max(2, len(tl) // 5)
    part = tl.iloc[:k] if first else tl.iloc[-k:]
    series = part[cols].sum(axis=1)
    span = int(part.time_ns.iloc[-1] - part.time_ns.iloc[0])
    return round(float(series.iloc[-1] - series.iloc[0]) * 1e6 / span, 3) if span else 0.0


def fact_depot_contention_start(vr: VariantResult) -> float:
    """Failed depot try-locks per ms over the first fifth of the run."""
    return _window_rate(vr, "cache.*.depot_contention", True)


def fact_depot_contention_end(vr: VariantResult) -> float:
    """Failed depot try-locks per ms over the last fifth of the run."""
    return _window_rate(vr, "cache.*.depot_contention", False)


def fact_update_contention(vr: VariantResult) -> list[int]:
    """Failed depot try-locks of the experiment's caches since the previous kmem_update pass,
    per pass in order."""
    return [sum(n for c, n in d["contention"].items() if c in vr.caches)
            for d in _detail(vr, "kmem_update")]


def fact_update_contention_last(vr: VariantResult) -> int | None:
    """Failed depot try-locks seen by the last kmem_update pass (None: no pass ran)."""
    passes = fact_update_contention(vr)
    return passes[-1] if passes else None


def fact_deadlock_at(vr: VariantResult) -> int | None:
    """Simulated time of the deadlock (time to failure), ns; None if the run did not lock up."""
    return _first(vr, "deadlock")


FACTS: dict[str, Callable[[VariantResult], Any]] = {
    "update_contention": fact_update_contention,
    "update_contention_last": fact_update_contention_last,
    "deadlock_at_ns": fact_deadlock_at,
    "grown": fact_grown,
    "free_limit_destroyed": fact_free_limit_destroyed,
    "reaped": fact_reaped,
    "pages_freed": fact_pages_freed,
    "irq_off_max_ns": fact_irq_off_max_ns,
    "list_lock_hold_max_ns": fact_list_lock_hold_max,
    "list_lock_hold_total_ns": fact_list_lock_hold_total,
    "cached_zero_after_ns": fact_cached_zero_after,
    "slabs_zero_after_ns": fact_slabs_zero_after,
    "arrays_zero_after_ns": fact_arrays_zero_after,
    "shared_zero_after_ns": fact_shared_zero_after,
    "magazine_resizes": fact_magazine_resizes,
    "slabs_peak": fact_slabs_peak,
    "slabs_end": fact_slabs_end,
    "consolidator_yes": fact_consolidator_yes,
    "slabs_after_first_episode": fact_slabs_after_first_episode,
    "magazine_sizes": fact_magazine_sizes,
    "depot_contention_start": fact_depot_contention_start,
    "depot_contention_end": fact_depot_contention_end,
    "skc_lock_contentions": fact_skc_lock_contentions,
    "skc_lock_wait_ns": fact_skc_lock_wait_ns,
    "alloc_mean_ns": fact_alloc_mean_ns,
    "allocs": fact_allocs,
    "alloc_failures": fact_nosleep_failures,
    "age_skipped": fact_age_skipped,
    "age_outs": fact_age_outs,
    "long_wait_share": fact_long_wait_share,
    "grow_wait_fast_share": fact_grow_wait_fast_share,
    "grow_waits": fact_grow_waits,
    "grow_wait_p50_ns": fact_grow_wait_p50,
    "grow_wait_max_ns": fact_grow_wait_max,
    "alloc_p99_ns": fact_alloc_p99,
    "deadlocked_after_ns": fact_deadlocked_after,
    "grow_queue_delay_max_ns": fact_grow_queue_delay_max,
    "caches_deadlocked": fact_caches_deadlocked,
    "emergency_max": fact_emergency_max,
    "emergency_left": fact_emergency_left,
    "sleeps_in_atomic": fact_sleeps_in_atomic,
    **SPL_FACTS,
    **SLUB_FACTS,
}
"""Figures a scenario can ask for in `facts`, by name."""


# --- narrative ------------------------------------------------------------------------------

def narrative(sc: Scenario, results: list[VariantResult]) -> str:
    """What happened in each variant, in time order, with the numbers."""
    out = [f"# Scenario {sc.name}", "", sc.summary, ""]
    for vr in results:
        s = vr.result.summary
        out.append(f"## {vr.variant.name}" + (f": {vr.variant.summary}" if vr.variant.summary
                                               else ""))
        out.append("")
        out.append(f"Policy {s['policy']}, {plural(s['machine']['cpus'], 'CPU')}, "
                   f"{format_duration(s['end_ns'])} simulated; {s['ops']['allocs']} allocations, "
                   f"{s['ops']['frees']} frees, {s['ops']['alloc_failures']} failed; "
                   f"status **{vr.result.status}**.")
        out.append("")
        dropped = s.get("events_dropped", {})
        for kind in sc.narrate:
            times = _kind_times(vr, kind)
            total = s.get("events", {}).get(kind, len(times))
            if not times:
                out.append(f"- {kind}: never")
            elif total == 1:
                out.append(f"- {kind}: once, at {format_duration(times[0])}")
            elif dropped.get(kind):
                out.append(f"- {kind}: {total} times, first at {format_duration(times[0])}; "
                           f"the log kept {len(times)}, the last of them at "
                           f"{format_duration(times[-1])}")
            else:
                out.append(f"- {kind}: {total} times, first at {format_duration(times[0])},"
                           f" last at {format_duration(times[-1])}")
        if dropped:
            out.append(f"- ({sum(dropped.values())} events were only counted, not kept: "
                       f"{', '.join(f'{k} {n}' for k, n in sorted(dropped.items()))})")
        for name, value in vr.facts.items():
            shown = format_duration(value) if name.endswith("_ns") and value is not None \
                else value
            out.append(f"- {name}: {shown} ({FACTS[name].__doc__.splitlines()[0]})")
        if vr.unmet:
            out += [f"- **expectation not met**: {why}" for why in vr.unmet]
        else:
            out.append(f"- expectation met (status {vr.variant.expect.status}"
                       + "".join(f", {c}" for c in vr.variant.expect.facts) + ")")
        if vr.result.deadlock is not None:
            out += ["", "Deadlock report:", "", "```", vr.result.deadlock.text().rstrip(), "```"]
        out.append("")
    return "\n".join(out)


# --- plot -----------------------------------------------------------------------------------

MAX_MARKER_LINES = 12
"""Event kinds with more occurrences than this are drawn as a rug of ticks."""

_MARKER_COLOURS = ["tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:pink",
                   "tab:olive", "tab:cyan"]


def plot(sc: Scenario, results: list[VariantResult], rf: RunFolder) -> None:
    """timeline.png: one panel per variant with the chosen series and event markers."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(results)
    fig, axes = plt.subplots(n, 1, figsize=(11, 3.2 * n + 0.6), sharex=True, squeeze=False)
    for ax, vr in zip(axes[:, 0], results, strict=True):
        tl = vr.timeline
        x = tl.time_ns / 1e6
        cols = [c for pat in sc.plot for c in tl.columns if fnmatch.fnmatch(c, pat)]
        for c in dict.fromkeys(cols):
            ax.plot(x, tl[c], label=c.split(".", 1)[1] if c.startswith("cache.") else c,
                    linewidth=1.4)
        for i, kind in enumerate(sc.markers):
            times = _kind_times(vr, kind)
            if not times:
                continue
            colour = _MARKER_COLOURS[i % len(_MARKER_COLOURS)]
            label = f"{kind} ({len(times)})"
            if len(times) > MAX_MARKER_LINES:
                # many events: a rug of ticks under the axis instead of a wall of lines
                ax.plot([t / 1e6 for t in times], [-0.04 - 0.035 * i] * len(times), "|",
                        color=colour, markersize=7, transform=ax.get_xaxis_transform(),
                        clip_on=False, label=label)
                continue
            for j, t in enumerate(times):
                ax.axvline(t / 1e6, color=colour, linestyle="--", linewidth=1.0, alpha=0.85,
                           label=label if j == 0 else None)
        title = f"{vr.variant.name}: {vr.variant.summary}" if vr.variant.summary else \
            vr.variant.name
        if vr.result.status != "ok":
            title += f"  [{vr.result.status.upper()}]"
        ax.set_title(title, fontsize=10, loc="left")
        ax.set_ylabel("count")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes[-1, 0].set_xlabel("simulated time (ms)")
    fig.suptitle(f"Scenario {sc.name}: {sc.summary}", fontsize=11, fontweight="bold")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()), h_pad=2.0)
    rf.write_figure("timeline.png", fig)
    plt.close(fig)
