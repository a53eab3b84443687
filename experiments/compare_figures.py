"""The figures of `kmemsim compare` (matplotlib objects; experiments.compare writes them).

- `latency_tail`: allocation and free latency as CCDFs (share of operations slower than x) on
  log-log axes, p99 / p99.9 marked on every curve and the maximum as a cross;
- `irq_off`: the same for IRQ-disabled section lengths and interrupt delivery latency;
- `lock_wait`: lock wait over time (share of one CPU spent spinning, per interval) for each
  run's lock classes ranked by total wait and labelled with that total; classes that never
  waited are left out; panels share their y-axis;
- `memory`: memory held by each cache (stacked) and requested by live objects, with the phase
  names and event marker rows (growth, reaps, DEADLOCKED, emergency objects, ...);
- `fragmentation`: held / requested over time, and at the end the held memory split into
  requested, free in slabs, cached in per-CPU layers and depots, and the rest (slab rounding,
  metadata, emergency objects) — the same view for every policy;
- `scaling`: throughput and lock wait against CPU count (more than one CPU count only);
- `summary`: bars per group (mean over seeds, min-max whiskers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import pandas as pd

from experiments.compare import Group, group_frame, representatives
from experiments.load import Run

POLICY_COLORS = {"global_lock": "#7f7f7f", "spl": "#1f77b4", "solaris": "#d62728",
                 "linux_slab": "#2ca02c", "slub": "#9467bd"}
"""One colour per policy, the same in every figure."""
SERIES_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
                 "#17becf", "#bcbd22", "#7f7f7f"]
LINESTYLES = ["-", "--", ":", "-."]

MARKERS: list[tuple[str, tuple[str, ...], str]] = [
    ("growth", ("grow_start", "kmem_slab_create"), "#2ca02c"),
    ("reap / slab freed", ("reap", "kmem_reap", "slab_reclaim", "slab_destroy"), "#9467bd"),
    ("DEADLOCKED set", ("deadlocked_set",), "#d62728"),
    ("DEADLOCKED clear", ("deadlocked_clear",), "#ff9896"),
    ("emergency obj", ("emergency_alloc", "emergency_free"), "#ff7f0e"),
    ("magazine resize", ("magazine_resize",), "#17becf"),
    ("consolidation", ("consolidator_move",), "#8c564b"),
    ("pressure", ("pressure_start", "pressure_end"), "#bcbd22"),
]
"""Event marker rows: label, event kinds, colour (phases are drawn as named lines)."""

FIGURES = ("latency_tail", "irq_off", "lock_wait", "memory", "fragmentation", "scaling",
           "summary")
"""Figure names, in report order (scaling only when there is more than one CPU count)."""


def styles(runs: Sequence[Run]) -> dict[str, tuple[str, str]]:
    """(colour, line style) per run label: the policy's colour when each policy has one
    series, else a colour per series (and line styles, in case colours are hard to tell)."""
    policies = [r.policy for r in runs]
    shared = len(set(policies)) < len(policies)
    out: dict[str, tuple[str, str]] = {}
    for i, r in enumerate(runs):
        if shared:
            out[r.label] = (SERIES_COLORS[i % len(SERIES_COLORS)],
                            LINESTYLES[i % len(LINESTYLES)])
        else:
            out[r.label] = (POLICY_COLORS.get(r.policy, SERIES_COLORS[i % len(SERIES_COLORS)]),
                            "-")
    return out


def _ms(ns: Any) -> Any:
    return np.asarray(ns, dtype=float) / 1e6


def _interval_ns(run: Run) -> float:
    t = run.timeline["time_ns"].to_numpy()
    return float(np.median(np.diff(t))) if len(t) > 1 else float(run.summary["end_ns"] or 1)


def ccdf(run: Run, name: str) -> tuple[Any, Any]:
    """(x, share of values > x) at each bucket's highest value, log-plot ready (x >= 1)."""
    h = run.histogram(name).sort_values("hi_ns")
    if h.empty:
        return np.array([]), np.array([])
    counts = h["count"].to_numpy(dtype=float)
    above = 1.0 - np.cumsum(counts) / counts.sum()
    x = np.maximum(h["hi_ns"].to_numpy(dtype=float), 1.0)
    return np.concatenate([[x[0]], x]), np.concatenate([[1.0], above])


def _quantile_of(run: Run, name: str) -> dict[str, float]:
    s = run.summary
    if name in ("irq_off", "irq_latency"):
        return s["cpu"].get(name, {})
    return s["latency"].get(name, {})


def _tail_axes(ax: Any, runs: Sequence[Run], name: str, title: str, xlabel: str) -> None:
    st = styles(runs)
    absent = []
    floor = 1.0
    for run in runs:
        x, y = ccdf(run, name)
        if not len(x):
            absent.append(run.label)
            continue
        color, ls = st[run.label]
        n = float(run.histogram(name)["count"].sum())
        floor = min(floor, 0.5 / n)
        # The last bucket's share above is 0: draw it at half of 1/n so the max shows.
        y = np.where(y > 0, y, 0.5 / n)
        ax.step(x, y, where="post", color=color, ls=ls, lw=1.6, label=run.label)
        q = _quantile_of(run, name)
        for key, marker in (("p99", "o"), ("p99.9", "s")):
            if q.get(key):
                ax.plot([q[key]], [1 - float(key[1:]) / 100], marker=marker, color=color,
                        ms=6, mfc="white", mew=1.5, ls="none")
        if q.get("max"):
            ax.plot([max(float(q["max"]), 1.0)], [0.5 / n], marker="x", color=color, ms=8,
                    mew=2, ls="none")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    if not ax.lines:
        ax.text(0.5, 0.5, "no samples in any run", ha="center", va="center",
                transform=ax.transAxes, color="0.4")
        ax.set_xticks([])
        ax.set_yticks([])
        return
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(floor * 0.6, 1.5)
    for yq, txt in ((1e-2, "p99"), (1e-3, "p99.9")):
        ax.axhline(yq, color="0.6", lw=0.8, ls=":")
        ax.annotate(txt, (1.0, yq), xycoords=("axes fraction", "data"), xytext=(-4, 2),
                    textcoords="offset points", ha="right", fontsize=7, color="0.4")
    if absent:
        ax.text(0.98, 0.97, "no samples: " + ", ".join(absent), transform=ax.transAxes,
                ha="right", va="top", fontsize=8, color="0.35")
    ax.set_ylabel("share of operations slower (log)")
    ax.grid(alpha=0.3, which="both")
    handles, labels = ax.get_legend_handles_labels()
    handles += [plt.Line2D([], [], marker="o", color="0.3", mfc="white", ls="none"),
                plt.Line2D([], [], marker="s", color="0.3", mfc="white", ls="none"),
                plt.Line2D([], [], marker="x", color="0.3", ls="none")]
    labels += ["p99", "p99.9", "max (drawn at 1/(2n))"]
    ax.legend(handles, labels, fontsize=7, loc="lower left")


def fig_latency_tail(groups: Sequence[Group]) -> Any:
    """Allocation and free latency CCDFs (log-log), one curve per series."""
    reps = representatives(groups)
    fig, (a, f) = plt.subplots(1, 2, figsize=(13, 4.6), constrained_layout=True, sharey=True)
    _tail_axes(a, reps, "latency.alloc", "kmem_cache_alloc latency", "latency (ns, log)")
    _tail_axes(f, reps, "latency.free", "kmem_cache_free latency", "latency (ns, log)")
    fig.suptitle("Latency tails (simulated time; CCDF: share of operations slower than x)")
    return fig


def fig_irq_off(groups: Sequence[Group]) -> Any:
    """IRQ-disabled section lengths and IRQ delivery latency as CCDFs (log-log)."""
    reps = representatives(groups)
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.6), constrained_layout=True)
    _tail_axes(a, reps, "irq_off", "IRQ-disabled sections (all CPUs)", "section length (ns, log)")
    _tail_axes(b, reps, "irq_latency", "interrupt delivery latency", "latency (ns, log)")
    a.set_ylabel("share of sections longer (log)")
    b.set_ylabel("share of interrupts later (log)")
    if any(r.policy == "solaris" for r in reps):
        a.text(0.98, 0.90, "solaris: adaptive mutexes, no IRQ-off sections",
               transform=a.transAxes, ha="right", fontsize=8, color=POLICY_COLORS["solaris"])
    fig.suptitle("Interrupts: how long they stay off, how late they are taken")
    return fig


def _grid(n: int, cols: int = 2, width: float = 6.4, height: float = 3.2,
          sharey: bool = False) -> tuple[Any, list[Any]]:
    cols = min(cols, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False,
                             constrained_layout=True, sharey=sharey)
    for ax in axes.flat[n:]:
        fig.delaxes(ax)
    return fig, list(axes.flat[:n])


def fig_lock_wait(groups: Sequence[Group], top: int = 6) -> Any:
    """Lock wait over time (share of one CPU spinning) for each run's `top` classes by total
    wait; labels give the same total. Shared y-axis."""
    reps = representatives(groups)
    fig, axes = _grid(len(reps), sharey=True)
    for ax, run in zip(axes, reps, strict=True):
        tl = run.timeline
        iv = _interval_ns(run)
        ranked = sorted(((v["waittime_total_ns"], k) for k, v in run.summary["locks"].items()
                         if v["waittime_total_ns"] > 0), key=lambda t: (-t[0], t[1]))[:top]
        for total, name in ranked:
            col = f"lock.{name}.waittime_total"
            if col in tl:
                ax.plot(_ms(tl.time_ns), tl[col] / iv, lw=1.2, drawstyle="steps-post",
                        label=f"{name} ({total / 1e6:,.3f} ms wait)")
        ax.set_title(f"{run.label}: lock wait")
        ax.set_xlabel("simulated time (ms)")
        ax.set_ylabel("CPUs spinning (wait ns per ns)")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7, loc="upper right")
        else:
            ax.text(0.5, 0.5, "no lock wait", ha="center", va="center", transform=ax.transAxes,
                    color="0.4")
    axes[0].set_ylim(bottom=0)
    fig.suptitle(f"Lock wait over time (top {top} lock classes by total wait; "
                 "every lock named by its cache)")
    return fig


def _caches(run: Run) -> list[str]:
    return sorted(c for c in run.summary.get("caches", {})
                  if f"cache.{c}.bytes_total" in run.timeline)


def _event_rows(ax: Any, run: Run) -> None:
    """Event marker rows at the top of `ax` and named phase lines."""
    ev = run.events
    row = 0
    for label, kinds, color in MARKERS:
        sel = ev[ev.kind.isin(kinds)]
        if sel.empty:
            continue
        times = _ms(sel.time_ns.to_numpy())
        if len(times) > 2000:
            times = times[np.linspace(0, len(times) - 1, 2000).astype(int)]
        y = 1.0 - 0.05 * (row + 1)
        ax.scatter(times, np.full(len(times), y), marker="|", s=60, color=color,
                   transform=ax.get_xaxis_transform(), label=f"{label} ({len(sel):,})", zorder=3)
        row += 1
    phases = ev[ev.kind == "phase"]
    seen: set[tuple[float, str]] = set()
    for e in phases.itertuples():
        name = _phase_name(e.detail)
        t = float(e.time_ns) / 1e6
        if (t, name) in seen or name == "end":
            continue
        seen.add((t, name))
        ax.axvline(t, color="0.3", lw=0.8, ls="--", zorder=1)
        ax.text(t, 0.02, f" {name}", transform=ax.get_xaxis_transform(), fontsize=7,
                color="0.2", rotation=90, va="bottom")


def _phase_name(detail: str) -> str:
    import json
    try:
        return str(json.loads(detail).get("name", "phase"))
    except (ValueError, AttributeError):
        return "phase"


def fig_memory(groups: Sequence[Group]) -> Any:
    """Memory held per cache (stacked) and requested by live objects, with named phases and
    event marker rows; one panel per series."""
    reps = representatives(groups)
    fig, axes = _grid(len(reps), cols=1, width=13, height=3.4)
    for ax, run in zip(axes, reps, strict=True):
        tl = run.timeline
        t = _ms(tl.time_ns)
        caches = _caches(run)
        stacks = [tl[f"cache.{c}.bytes_total"].to_numpy(dtype=float) / 2**20 for c in caches]
        if stacks:
            ax.stackplot(t, *stacks, labels=[f"held: {c}" for c in caches], alpha=0.55,
                         step="post")
        req = sum((tl[f"cache.{c}.bytes_requested"] for c in caches
                   if f"cache.{c}.bytes_requested" in tl), start=pd.Series(0.0, index=tl.index))
        ax.plot(t, req / 2**20, color="black", lw=1.4, drawstyle="steps-post",
                label="requested by live objects (all caches)")
        top = float(np.sum(stacks, axis=0).max()) if stacks else 0.0
        ax.set_ylim(0, max(top * 1.6, 1e-3))
        ax.set_title(f"{run.label}: memory held by cache")
        ax.set_xlabel("simulated time (ms)")
        ax.set_ylabel("MiB")
        ax.grid(alpha=0.3)
        _event_rows(ax, run)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle("Memory held by the caches (stacked), requested by live objects, and events")
    return fig


def _obj_sizes(run: Run, group: Group | None) -> dict[str, float]:
    """Object size per cache: from config.toml's caches, else bytes_requested / objs_inuse."""
    sizes: dict[str, float] = {}
    if group is not None:
        for c in group.config.get("caches", []):
            sizes[c["name"]] = float(c["size"])
    tl = run.timeline
    for c in run.summary.get("caches", {}):
        if c in sizes:
            continue
        inuse, req = f"cache.{c}.objs_inuse", f"cache.{c}.bytes_requested"
        if inuse in tl and req in tl:
            ok = tl[inuse] > 0
            if ok.any():
                sizes[c] = float((tl.loc[ok, req] / tl.loc[ok, inuse]).iloc[-1])
    return sizes


SPLIT = (("requested by live objects", "#4c72b0"), ("free in slabs", "#dd8452"),
         ("cached: per-CPU layers, depots", "#c44e52"), ("other: rounding, metadata", "#8c8c8c"))


def memory_split(run: Run, group: Group | None = None) -> dict[str, float]:
    """The end-of-run held memory (MiB) split as SPLIT, all caches together."""
    sizes = _obj_sizes(run, group)
    out = dict.fromkeys((k for k, _c in SPLIT), 0.0)
    for name, c in run.summary.get("caches", {}).items():
        size = sizes.get(name, 0.0)
        held = float(c.get("bytes_total", 0))
        req = float(c.get("bytes_requested", 0))
        free = c.get("objs_free", 0) * size
        cached = c.get("objs_cached", 0) * size
        out[SPLIT[0][0]] += req / 2**20
        out[SPLIT[1][0]] += free / 2**20
        out[SPLIT[2][0]] += cached / 2**20
        out[SPLIT[3][0]] += max(0.0, held - req - free - cached) / 2**20
    return out


def fig_fragmentation(groups: Sequence[Group]) -> Any:
    """Held / requested over time (one line per series) and the end-of-run split per group."""
    reps = representatives(groups)
    by_label = {g.label: g for g in groups}
    fig, (ratio, split) = plt.subplots(1, 2, figsize=(13, 4.8), constrained_layout=True,
                                       gridspec_kw={"width_ratios": [1.3, 1]})
    st = styles(reps)
    for run in reps:
        tl = run.timeline
        caches = _caches(run)
        held = sum((tl[f"cache.{c}.bytes_total"] for c in caches),
                   start=pd.Series(0.0, index=tl.index))
        req = sum((tl[f"cache.{c}.bytes_requested"] for c in caches
                   if f"cache.{c}.bytes_requested" in tl), start=pd.Series(0.0, index=tl.index))
        r = (held / req.where(req > 0)).to_numpy(dtype=float)
        color, ls = st[run.label]
        ratio.plot(_ms(tl.time_ns), r, color=color, ls=ls, lw=1.5, drawstyle="steps-post",
                   label=run.label)
    ratio.axhline(1.0, color="0.5", lw=0.8)
    ratio.set_yscale("log")
    ratio.yaxis.set_major_formatter(mticker.FormatStrFormatter("%g"))
    ratio.yaxis.set_minor_formatter(mticker.FormatStrFormatter("%g"))
    ratio.tick_params(axis="y", which="minor", labelsize=7)
    ratio.set_title("memory held / requested by live objects (all caches)")
    ratio.set_xlabel("simulated time (ms)")
    ratio.set_ylabel("held / requested (log; 1 = no overhead)")
    ratio.grid(alpha=0.3, which="both")
    ratio.legend(fontsize=7)
    labels = [r.label for r in reps]
    bottom = np.zeros(len(reps))
    for key, color in SPLIT:
        vals = np.array([memory_split(r, by_label.get(r.label))[key] for r in reps])
        split.barh(labels, vals, left=bottom, color=color, label=key)
        bottom += vals
    for i, total in enumerate(bottom):
        split.text(total, i, f" {total:,.2f} MiB", va="center", fontsize=7)
    split.invert_yaxis()
    split.margins(x=0.25)
    split.set_title("held at the end, by where the memory is")
    split.set_xlabel("MiB")
    split.tick_params(axis="y", labelsize=7)
    split.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    split.grid(alpha=0.3, axis="x")
    fig.suptitle("Fragmentation: what the caches hold beyond what live objects need")
    return fig


def fig_scaling(groups: Sequence[Group]) -> Any | None:
    """Throughput and lock wait against CPU count, one line per series (min-max whiskers
    over seeds); None with a single CPU count."""
    df = group_frame(groups)
    if df.cpus.nunique() < 2:
        return None
    fig, (tp, lw) = plt.subplots(1, 2, figsize=(12, 4.4), constrained_layout=True)
    reps = {g.series: g.representative for g in groups}
    st = styles(list(reps.values()))
    for series, d in df.groupby("series", sort=False):
        d = d.sort_values("cpus")
        color, ls = st[reps[series].label]
        for ax, col, scale in ((tp, "ops_per_sim_s", 1e-6), (lw, "lock_wait_share", 100.0)):
            y = d[col] * scale
            err = np.vstack([y - d[f"{col}_min"] * scale, d[f"{col}_max"] * scale - y])
            ax.errorbar(d.cpus, y, yerr=err, fmt="o", ls=ls, color=color, capsize=3,
                        label=series)
    cpus = sorted(df.cpus.unique())
    for ax in (tp, lw):
        ax.set_xscale("log", base=2)
        ax.set_xticks(cpus, [str(n) for n in cpus])
        ax.set_xlabel("CPUs")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    tp.set_yscale("log")
    tp.set_ylabel("alloc+free per simulated second (millions, log)")
    tp.set_title("Throughput against CPU count")
    lw.set_ylabel("lock wait (% of CPU time)")
    lw.set_title("Lock wait against CPU count")
    fig.suptitle("Scaling (mean over seeds; whiskers: min-max over seeds)")
    return fig


PANELS = [("ops_per_cpu_ms", "throughput", "alloc+free per CPU per ms", 1.0),
          ("alloc_p99_ns", "p99 alloc latency", "ns", 1.0),
          ("alloc_p999_ns", "p99.9 alloc latency", "ns", 1.0),
          ("lock_wait_share", "lock wait", "% of CPU time", 100.0),
          ("irq_off_share", "IRQs disabled", "% of CPU time", 100.0),
          ("bytes_peak_mib", "peak memory held", "MiB", 1.0)]


def fig_summary(groups: Sequence[Group]) -> Any:
    """Bars per group: mean over its seeds, whiskers from the lowest to the highest seed."""
    df = group_frame(groups)
    fig, axes = plt.subplots(2, 3, figsize=(14, 7), constrained_layout=True)
    colors = [POLICY_COLORS.get(p, "#333333") for p in df.policy]
    for ax, (col, title, unit, scale) in zip(axes.flat, PANELS, strict=True):
        vals = df[col] * scale
        err = np.vstack([vals - df[f"{col}_min"] * scale, df[f"{col}_max"] * scale - vals])
        bars = ax.bar(range(len(df)), vals, color=colors, yerr=err, capsize=3)
        ax.bar_label(bars, labels=[f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
                                   for v in vals], fontsize=7)
        ax.set_xticks(range(len(df)), list(df.label), rotation=30, ha="right", fontsize=7)
        ax.set_title(title)
        ax.set_ylabel(unit)
        ax.margins(y=0.15)
        ax.grid(alpha=0.3, axis="y")
    seeds = sorted({int(s) for g in groups for s in g.seeds})
    if len(seeds) == 1:
        fig.suptitle(f"Summary per configuration (seed {seeds[0]})")
    else:
        fig.suptitle("Summary per configuration (mean over seeds " + ", ".join(map(str, seeds))
                     + "; whiskers: min-max over seeds)")
    return fig


def figures(groups: Sequence[Group]) -> dict[str, Any]:
    """Every figure for `groups`, by name (see FIGURES)."""
    out = {"latency_tail": fig_latency_tail(groups), "irq_off": fig_irq_off(groups),
           "lock_wait": fig_lock_wait(groups), "memory": fig_memory(groups),
           "fragmentation": fig_fragmentation(groups)}
    sc = fig_scaling(groups)
    if sc is not None:
        out["scaling"] = sc
    out["summary"] = fig_summary(groups)
    return out
