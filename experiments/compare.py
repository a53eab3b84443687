"""`kmemsim compare`: figures and an HTML report comparing runs and sweeps.

Figures (PNG, one file each; `figures()` returns the matplotlib objects so tests can inspect
them):

- `lock_contention.png`: contentions per millisecond of simulated time for the busiest lock
  classes of each run (from the timeline's per-interval lock counters);
- `irq_off.png`: distribution of IRQ-disabled section lengths (cumulative share, log x);
- `latency_cdf.png`: allocation and free latency CDFs (log x);
- `memory.png`: memory held by the caches and external fragmentation over time, with the
  policy events (growth, reap, DEADLOCKED set/clear, emergency objects, magazine resize,
  consolidation, pressure episodes, workload phases) as marker rows;
- `scaling.png`: alloc+free throughput and lock wait against CPU count, one line per policy
  (only when the inputs hold more than one CPU count);
- `summary.png`: per-policy bars of the headline figures.

Time-series figures show one run per policy (the one with most CPUs, then the lowest seed),
so a large sweep stays readable; the scaling and summary figures use every run.
`report.html` embeds every figure (as data URIs: the file is self-contained), the summary
table and the text reports (/proc/spl/kmem/slab, ::kmastat, /proc/slabinfo, /proc/lock_stat).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from experiments.load import Run, is_run, is_sweep, load_run, load_sweep  # noqa: E402
from experiments.output import RunFolder  # noqa: E402

POLICY_COLORS = {"global_lock": "#7f7f7f", "spl": "#1f77b4", "solaris": "#d62728",
                 "linux_slab": "#2ca02c"}
"""One colour per policy, the same in every figure."""

MARKERS: list[tuple[str, tuple[str, ...], str]] = [
    ("growth", ("grow_start", "kmem_slab_create"), "#2ca02c"),
    ("reap / slab freed", ("reap", "kmem_reap", "slab_reclaim", "slab_destroy"), "#9467bd"),
    ("DEADLOCKED set", ("deadlocked_set",), "#d62728"),
    ("DEADLOCKED clear", ("deadlocked_clear",), "#ff9896"),
    ("emergency obj", ("emergency_alloc", "emergency_free"), "#ff7f0e"),
    ("magazine resize", ("magazine_resize",), "#17becf"),
    ("consolidation", ("consolidator_move",), "#8c564b"),
    ("pressure", ("pressure_start", "pressure_end"), "#bcbd22"),
    ("phase", ("phase",), "#000000"),
]
"""Event marker rows: label, event kinds, colour."""

FIGURES = ("lock_contention", "irq_off", "latency_cdf", "memory", "scaling", "summary")
"""Figure names, in report order (scaling only when there is more than one CPU count)."""

REPORT_TITLES = {"spl_slab.txt": "/proc/spl/kmem/slab", "kmastat.txt": "::kmastat",
                 "slabinfo.txt": "/proc/slabinfo", "lock_stat.txt": "/proc/lock_stat",
                 "deadlock.txt": "deadlock report"}


def load_inputs(paths: Sequence[str | Path]) -> list[Run]:
    """Runs from run folders and sweep folders (every finished point of a sweep)."""
    runs: list[Run] = []
    for p in paths:
        if is_sweep(p):
            _table, by_id = load_sweep(p, runs=True)
            runs.extend(by_id[k] for k in sorted(by_id))
        elif is_run(p):
            runs.append(load_run(p))
        else:
            raise FileNotFoundError(f"{p}: neither a run folder nor a sweep folder")
    if not runs:
        raise FileNotFoundError("no finished runs in " + ", ".join(map(str, paths)))
    return runs


def representatives(runs: Sequence[Run]) -> list[Run]:
    """One run per policy for time-series figures: most CPUs, then lowest seed."""
    best: dict[str, Run] = {}
    for r in runs:
        cur = best.get(r.policy)
        if cur is None or (-r.cpus, r.summary["seed"]) < (-cur.cpus, cur.summary["seed"]):
            best[r.policy] = r
    order = list(POLICY_COLORS) + sorted(set(best) - set(POLICY_COLORS))
    return [best[p] for p in order if p in best]


def _color(run: Run) -> str:
    return POLICY_COLORS.get(run.policy, "#333333")


def _ms(ns: Any) -> Any:
    return np.asarray(ns, dtype=float) / 1e6


def _interval_ns(run: Run) -> float:
    t = run.timeline["time_ns"].to_numpy()
    return float(np.median(np.diff(t))) if len(t) > 1 else float(run.summary["end_ns"] or 1)


def _grid(n: int, width: float = 6.0, height: float = 3.0, cols: int = 2) -> tuple[Any, Any]:
    cols = min(cols, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False,
                             constrained_layout=True)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def fig_lock_contention(runs: Sequence[Run], top: int = 5) -> Any:
    """Contentions per ms over time for each run's `top` lock classes by total wait."""
    reps = representatives(runs)
    fig, axes = _grid(len(reps))
    for ax, run in zip(axes, reps, strict=True):
        tl = run.timeline
        per_ms = 1e6 / _interval_ns(run)
        classes = sorted(run.summary["locks"].items(),
                         key=lambda kv: (-kv[1]["waittime_total_ns"], -kv[1]["contentions"],
                                         kv[0]))[:top]
        for name, st in classes:
            col = f"lock.{name}.contentions"
            if col not in tl:
                continue
            ax.plot(_ms(tl.time_ns), tl[col] * per_ms, lw=1.2,
                    label=f"{name} ({st['contentions']:,} total)")
        ax.set_title(f"{run.label}: lock contention")
        ax.set_xlabel("simulated time (ms)")
        ax.set_ylabel("contentions per ms")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7, loc="upper right")
        else:
            ax.text(0.5, 0.5, "no lock contention", ha="center", va="center",
                    transform=ax.transAxes, color="0.4")
    fig.suptitle("Lock contention over time (busiest lock classes by total wait)")
    return fig


def _cdf(run: Run, name: str) -> tuple[Any, Any]:
    h = run.histogram(name).sort_values("hi_ns")
    if h.empty:
        return np.array([]), np.array([])
    counts = h["count"].to_numpy(dtype=float)
    return np.maximum(h["hi_ns"].to_numpy(dtype=float), 1.0), np.cumsum(counts) / counts.sum()


LINESTYLES = {"global_lock": "-", "spl": "--", "solaris": "-", "linux_slab": ":"}
"""Line styles that keep overlapping CDFs visible (spl's KMC_SLAB caches run through the Linux
SLAB model, so their curves can coincide)."""


def _cdf_axes(ax: Any, runs: Sequence[Run], name: str, title: str, xlabel: str) -> None:
    absent = []
    for run in runs:
        x, y = _cdf(run, name)
        if len(x):
            ax.step(x, y, where="post", color=_color(run), lw=1.8,
                    ls=LINESTYLES.get(run.policy, "-"), label=run.label)
        else:
            absent.append(run.label)
    if absent:
        ax.text(0.02, 0.04, "no samples: " + ", ".join(absent), transform=ax.transAxes,
                fontsize=8, color="0.35")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("cumulative share")
    ax.grid(alpha=0.3, which="both")
    if ax.lines:
        ax.legend(fontsize=8, loc="lower right")


def fig_irq_off(runs: Sequence[Run]) -> Any:
    """Cumulative distribution of IRQ-disabled section lengths, one line per policy."""
    reps = representatives(runs)
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    _cdf_axes(ax, reps, "irq_off", "IRQ-disabled section length (all CPUs)",
              "section length (ns, log; power-of-two buckets)")
    if any(r.policy == "solaris" for r in reps):
        ax.text(0.02, 0.10, "solaris: per-CPU locks instead of IRQ-off sections",
                transform=ax.transAxes, fontsize=8, color=POLICY_COLORS["solaris"])
    return fig


def fig_latency(runs: Sequence[Run]) -> Any:
    """Allocation and free latency CDFs (log x), one line per policy."""
    reps = representatives(runs)
    fig, (a, f) = plt.subplots(1, 2, figsize=(12, 4), constrained_layout=True)
    _cdf_axes(a, reps, "latency.alloc", "kmem_cache_alloc latency",
              "latency (ns, log; power-of-two buckets)")
    _cdf_axes(f, reps, "latency.free", "kmem_cache_free latency",
              "latency (ns, log; power-of-two buckets)")
    fig.suptitle("Allocation and free latency (simulated time)")
    return fig


def _event_rows(ax: Any, run: Run) -> list[str]:
    """Draw event marker rows above the data (in axes-fraction y); the labels drawn."""
    ev = run.events
    drawn = []
    row = 0
    for label, kinds, color in MARKERS:
        sel = ev[ev.kind.isin(kinds)]
        if sel.empty:
            continue
        times = _ms(sel.time_ns.to_numpy())
        if len(times) > 2000:
            times = times[np.linspace(0, len(times) - 1, 2000).astype(int)]
        y = 1.0 - 0.045 * (row + 1)
        ax.scatter(times, np.full(len(times), y), marker="|", s=60, color=color,
                   transform=ax.get_xaxis_transform(), label=f"{label} ({len(sel):,})",
                   zorder=3)
        drawn.append(label)
        row += 1
    return drawn


def fig_memory(runs: Sequence[Run]) -> Any:
    """Memory held and external fragmentation over time, with policy event markers."""
    reps = representatives(runs)
    fig, axes = plt.subplots(len(reps), 2, figsize=(13, 3.2 * len(reps)), squeeze=False,
                             constrained_layout=True)
    for (mem, frag), run in zip(axes, reps, strict=True):
        tl = run.timeline
        t = _ms(tl.time_ns)
        caches = sorted(run.summary["caches"])
        held = sum((tl[f"cache.{c}.bytes_total"] for c in caches
                    if f"cache.{c}.bytes_total" in tl), start=pd.Series(0.0, index=tl.index))
        used = sum((tl[f"cache.{c}.bytes_requested"] for c in caches
                    if f"cache.{c}.bytes_requested" in tl), start=pd.Series(0.0, index=tl.index))
        mem.fill_between(t, 0, held / 2**20, color=_color(run), alpha=0.25, step="post",
                         label="held by caches")
        mem.plot(t, used / 2**20, color=_color(run), lw=1.4, drawstyle="steps-post",
                 label="requested by live objects")
        mem.set_title(f"{run.label}: memory")
        mem.set_xlabel("simulated time (ms)")
        mem.set_ylabel("MiB")
        mem.set_ylim(0, max(float(held.max()) / 2**20 * 1.9, 1e-3))
        mem.grid(alpha=0.3)
        _event_rows(mem, run)
        mem.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, 0.82), ncol=2)
        for c in caches:
            col = f"cache.{c}.frag_external"
            if col in tl:
                frag.plot(t, tl[col] * 100, lw=1.2, drawstyle="steps-post", label=c)
        frag.set_title(f"{run.label}: external fragmentation")
        frag.set_xlabel("simulated time (ms)")
        frag.set_ylabel("free objects in slabs (% of slab objects)")
        frag.set_ylim(0, 100)
        frag.grid(alpha=0.3)
        if len(frag.lines) <= 8 and frag.lines:
            frag.legend(fontsize=7, loc="upper right")
    fig.suptitle("Memory held and fragmentation over time (markers: policy events)")
    return fig


def results_frame(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per run with the headline figures (`Run.headline`) and the per-CPU and
    per-MiB forms the figures plot."""
    rows = []
    for r in runs:
        h = r.headline
        end = h["end_ns"] or 1
        rows.append({
            "label": r.label, "policy": r.policy, "cpus": r.cpus, "seed": r.summary["seed"],
            "status": r.summary["status"], "ops_per_sim_s": h["ops_per_sim_s"],
            "ops_per_cpu_ms": h["ops_per_sim_s"] / r.cpus / 1e3,
            "alloc_mean_ns": h["alloc_mean_ns"], "alloc_p99_ns": h["alloc_p99_ns"],
            "free_mean_ns": h["free_mean_ns"], "lock_contentions": h["lock_contentions"],
            "lock_wait_share": h["lock_wait_ns"] / (end * r.cpus),
            "irq_off_share": h["irq_off_share"], "bytes_peak_mib": h["bytes_total_peak"] / 2**20,
        })
    return pd.DataFrame(rows)


def fig_scaling(runs: Sequence[Run]) -> Any | None:
    """Throughput and lock wait against CPU count (None with a single CPU count)."""
    df = results_frame(runs)
    if df.cpus.nunique() < 2:
        return None
    g = df.groupby(["policy", "cpus"], sort=True).agg(
        ops=("ops_per_sim_s", "mean"), wait=("lock_wait_share", "mean")).reset_index()
    fig, (tp, lw) = plt.subplots(1, 2, figsize=(12, 4.2), constrained_layout=True)
    order = [p for p in POLICY_COLORS if p in set(g.policy)] + sorted(
        set(g.policy) - set(POLICY_COLORS))
    for pol in order:
        d = g[g.policy == pol]
        c = POLICY_COLORS.get(pol, "#333333")
        tp.plot(d.cpus, d.ops / 1e6, "o-", color=c, label=pol)
        lw.plot(d.cpus, d.wait * 100, "o-", color=c, label=pol)
    cpus = sorted(g.cpus.unique())
    base = g[g.cpus == cpus[0]].ops.max()
    if base > 0:
        tp.plot(cpus, [base * n / cpus[0] / 1e6 for n in cpus], ":", color="0.6",
                label="linear (from best at lowest count)")
    for ax in (tp, lw):
        ax.set_xscale("log", base=2)
        ax.set_xticks(cpus, [str(n) for n in cpus])
        ax.set_xlabel("CPUs")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    tp.set_yscale("log")
    tp.set_ylabel("alloc+free per simulated second (millions, log)")
    tp.set_title("Throughput against CPU count")
    lw.set_ylabel("lock wait (% of CPU time)")
    lw.set_title("Lock wait against CPU count")
    return fig


def fig_summary(runs: Sequence[Run]) -> Any:
    """Per-policy bars: throughput, alloc mean and p99, lock wait, IRQ-off, peak memory."""
    df = results_frame(runs)
    g = df.groupby("policy", sort=False).mean(numeric_only=True)
    order = [p for p in POLICY_COLORS if p in g.index] + sorted(set(g.index) - set(POLICY_COLORS))
    g = g.loc[order]
    panels = [("ops_per_cpu_ms", "throughput", "alloc+free per CPU per ms", 1.0),
              ("alloc_mean_ns", "mean alloc latency", "ns", 1.0),
              ("alloc_p99_ns", "p99 alloc latency", "ns", 1.0),
              ("lock_wait_share", "lock wait", "% of CPU time", 100.0),
              ("irq_off_share", "IRQs disabled", "% of CPU time", 100.0),
              ("bytes_peak_mib", "peak memory held", "MiB", 1.0)]
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5), constrained_layout=True)
    colors = [POLICY_COLORS.get(p, "#333333") for p in g.index]
    for ax, (col, title, unit, scale) in zip(axes.flat, panels, strict=True):
        vals = g[col] * scale
        bars = ax.bar(list(g.index), vals, color=colors)
        ax.bar_label(bars, labels=[f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
                                   for v in vals], fontsize=8)
        ax.set_title(title)
        ax.set_ylabel(unit)
        ax.margins(y=0.15)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(alpha=0.3, axis="y")
    cpus = sorted(df.cpus.unique())
    fig.suptitle("Per-policy summary (mean over runs; CPUs: "
                 + ", ".join(map(str, cpus)) + ")")
    return fig


def figures(runs: Sequence[Run]) -> dict[str, Any]:
    """Every figure for `runs`, by name (see FIGURES)."""
    out = {"lock_contention": fig_lock_contention(runs), "irq_off": fig_irq_off(runs),
           "latency_cdf": fig_latency(runs), "memory": fig_memory(runs)}
    sc = fig_scaling(runs)
    if sc is not None:
        out["scaling"] = sc
    out["summary"] = fig_summary(runs)
    return out


def render_html(runs: Sequence[Run], pngs: dict[str, bytes]) -> str:
    """The self-contained HTML report."""
    df = results_frame(runs)
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>kmemsim compare</title>",
             "<style>body{font-family:sans-serif;max-width:1400px;margin:auto;padding:1em}"
             "img{max-width:100%;border:1px solid #ddd}pre{background:#f6f6f6;padding:.6em;"
             "overflow-x:auto;font-size:12px}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style></head><body>",
             "<h1>kmemsim: policy comparison</h1>",
             f"<p>{len(runs)} run(s): " + ", ".join(html.escape(r.label) for r in runs) + "</p>",
             "<h2>Summary</h2>",
             df.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0)]
    for name in FIGURES:
        if name in pngs:
            data = base64.b64encode(pngs[name]).decode()
            parts.append(f"<h2 id='{name}'>{name.replace('_', ' ')}</h2>"
                         f"<img alt='{name}.png' src='data:image/png;base64,{data}'>")
    parts.append("<h2>Text reports</h2>")
    for run in runs:
        for fname, text in run.reports.items():
            title = REPORT_TITLES.get(fname, fname)
            parts.append(f"<details><summary>{html.escape(run.label)}: {title} "
                         f"({fname})</summary><pre>{html.escape(text)}</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)


def compare(paths: Sequence[str | Path], out: str | Path) -> list[Path]:
    """Load `paths`, write every figure and report.html into `out`; the files written."""
    runs = load_inputs(paths)
    folder = RunFolder(Path(out))
    figs = figures(runs)
    written = []
    pngs = {}
    for name, fig in figs.items():
        path = folder.write_figure(f"{name}.png", fig, dpi=100)
        pngs[name] = path.read_bytes()
        written.append(path)
        plt.close(fig)
    written.append(folder.write_text("report.html", render_html(runs, pngs)))
    written.append(folder.write_parquet("runs.parquet", results_frame(runs)))
    return written
