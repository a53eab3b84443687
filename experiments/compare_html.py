"""report.html of `kmemsim compare`: one self-contained page (no script, nothing external).

In order: what was compared (one header per group: experiment name and description, duration,
machine, policy and every tunable that is not the policy's default, caches, workloads one line
each, seeds, the full config.toml folded), the summary table (mean over seeds with min-max),
the per-workload x per-cache table, failed sweep points with their error, every figure as inline
SVG (with a link to the PNG beside the report), and every text report each run wrote. Wide
tables and reports scroll sideways instead of being cut.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from typing import Any

import pandas as pd

from experiments.compare import METRICS, Failure, Group, group_frame, workload_cache_frame
from experiments.compare_figures import FIGURES
from simcore.units import format_duration

REPORT_TITLES = {"spl_slab.txt": "/proc/spl/kmem/slab", "kmastat.txt": "::kmastat",
                 "kmem_slabs.txt": "::kmem_slabs", "kstat.txt": "kstat -p",
                 "slabinfo.txt": "/proc/slabinfo", "lock_stat.txt": "/proc/lock_stat",
                 "deadlock.txt": "deadlock report"}

STYLE = ("body{font-family:sans-serif;max-width:1500px;margin:auto;padding:1em;color:#222}"
         "img{max-width:100%;border:1px solid #ddd;background:#fff}"
         "pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:12px;white-space:pre}"
         ".scroll{overflow-x:auto;max-width:100%}"
         "table{border-collapse:collapse;font-size:12px;white-space:nowrap}"
         "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
         "td.l,th.l{text-align:left}.run{border-left:4px solid #1f77b4;padding-left:.8em;"
         "margin:1em 0}.run ul{margin:.2em 0}.err{color:#b00}")


def _esc(v: Any) -> str:
    return html.escape(str(v))


def _tunables(g: Group) -> list[str]:
    """`name = value` for every tunable of the group's policy that is not its default."""
    from policies import registry
    values = g.config.get("policy", {}).get("tunables", {})
    try:
        defaults = {t.name: t.default for t in registry.get(g.policy).tunables}
    except KeyError:
        defaults = {}
    out = []
    for k, v in sorted(values.items()):
        d = defaults.get(k, object())
        if not (v == d or str(v) == str(d)):
            out.append(f"{k} = {v!r}")
    return out


def _workload_line(w: dict[str, Any]) -> str:
    skip = {"kind"}
    parts = [f"{k}={v}" for k, v in w.items() if k not in skip and v not in ([], {}, None)
             and not isinstance(v, list | dict)]
    lists = [f"{k}={v}" for k, v in w.items() if isinstance(v, list) and v
             and not isinstance(v[0], dict)]
    phases = [p.get("name") or p.get("kind") for p in w.get("phases", []) or []]
    line = f"{w.get('kind', '?')}: " + ", ".join(lists + parts)
    if phases:
        line += "; phases " + " -> ".join(map(str, phases))
    return line


def header(g: Group) -> str:
    """One group's settings block."""
    cfg = g.config
    s0 = g.representative.summary
    mach = cfg.get("machine", {})
    dur = cfg.get("duration", s0.get("duration_ns", 0))
    items = [
        f"<b>experiment</b> {_esc(g.settings.get('name', s0.get('experiment', '')))}"
        + (f": {_esc(cfg['description'])}" if cfg.get("description") else ""),
        f"<b>duration</b> {_esc(format_duration(int(dur)) if isinstance(dur, int) else dur)}"
        f" simulated",
        f"<b>machine</b> {g.cpus} CPUs ({mach.get('nodes', 1)} node(s) x "
        f"{mach.get('cpus_per_node', g.cpus)}), HZ={mach.get('hz', '?')}, memory "
        f"{_esc(format_bytes(cfg.get('memory', {}).get('size', 0)))}",
        f"<b>policy</b> {_esc(g.policy)}; non-default tunables: "
        + (_esc(", ".join(_tunables(g))) or "none"),
        "<b>caches</b> " + _esc(", ".join(
            f"{c['name']} ({c['size']} B" + (f", {' '.join(c['flags'])}" if c.get("flags")
                                             else "") + ")"
            for c in cfg.get("caches", [])) or "none (created by the workloads)"),
        "<b>workloads</b><ul>" + "".join(f"<li>{_esc(_workload_line(w))}</li>"
                                          for w in cfg.get("workloads", [])) + "</ul>",
        f"<b>seeds</b> {', '.join(map(str, g.seeds))} ({len(g.runs)} run(s) averaged); "
        f"status: {_esc(', '.join(sorted({r.summary['status'] for r in g.runs})))}",
    ]
    if g.differs:
        items.append("<b>differs from the other runs in</b> " + _esc(", ".join(g.differs)))
    body = "".join(f"<div>{i}</div>" for i in items)
    return (f"<div class='run'><h3>{_esc(g.label)}</h3>{body}<details><summary>config.toml"
            f"</summary><pre>{_esc(g.config_text)}</pre></details>"
            f"<div>run folders: {_esc(', '.join(str(r.path) for r in g.runs))}</div></div>")


def format_bytes(n: Any) -> str:
    try:
        n = int(n)
    except (TypeError, ValueError):
        return str(n)
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} B"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v == 0:
            return "0"
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def table(df: pd.DataFrame, left: Sequence[str] = ()) -> str:
    """An HTML table of `df` in a sideways-scrolling box (`left`: left-aligned columns)."""
    head = "".join(f"<th class='{'l' if c in left else ''}'>{_esc(c)}</th>" for c in df.columns)
    rows = []
    for rec in df.itertuples(index=False):
        rows.append("<tr>" + "".join(
            f"<td class='{'l' if c in left else ''}'>{_esc(_fmt(v))}</td>"
            for c, v in zip(df.columns, rec, strict=True)) + "</tr>")
    return f"<div class='scroll'><table><tr>{head}</tr>{''.join(rows)}</table></div>"


def summary_table(groups: Sequence[Group]) -> pd.DataFrame:
    """The group frame with each metric as 'mean (min-max)' when there are several seeds."""
    df = group_frame(groups)
    out = df[["label", "seeds", "status"]].copy()
    for col in METRICS:
        out[col] = [
            _fmt(m) if lo == hi else f"{_fmt(m)} ({_fmt(lo)}-{_fmt(hi)})"
            for m, lo, hi in zip(df[col], df[f"{col}_min"], df[f"{col}_max"], strict=True)]
    return out


def render_html(groups: Sequence[Group], failures: Sequence[Failure],
                svgs: dict[str, bytes]) -> str:
    """The report page."""
    runs = [r for g in groups for r in g.runs]
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
             "<title>kmemsim compare</title>", f"<style>{STYLE}</style></head><body>",
             "<h1>kmemsim: policy comparison</h1>",
             f"<p>{len(runs)} run(s) in {len(groups)} configuration(s): "
             + ", ".join(_esc(g.label) for g in groups) + ". Runs with the same settings and "
             "different seeds are averaged (min-max in brackets); nothing else is.</p>",
             "<h2 id='runs'>What was run</h2>"]
    parts += [header(g) for g in groups]
    parts += ["<h2 id='summary'>Summary</h2>", table(summary_table(groups), ("label", "seeds",
                                                                           "status"))]
    wc = workload_cache_frame(groups)
    parts += ["<h2 id='workloads'>Per workload and cache</h2>",
              "<p>Allocations, frees and failures of each workload on each cache, allocation "
              "latency quantiles (ns), the wait for the cache's locks (ms, all workloads) and "
              "the cache's memory held and requested at the end (MiB); means over seeds.</p>",
              table(wc, ("group", "workload", "cache"))]
    parts.append("<h2 id='failed'>Failed points</h2>")
    if failures:
        parts.append(table(pd.DataFrame([f.__dict__ for f in failures]),
                           ("sweep", "point", "label", "error")))
    else:
        parts.append("<p>none: every point finished.</p>")
    for name in FIGURES:
        if name in svgs:
            data = base64.b64encode(svgs[name]).decode()
            parts.append(f"<h2 id='{name}'>{name.replace('_', ' ')}</h2>"
                         f"<p><a href='{name}.png'>{name}.png</a></p>"
                         f"<img alt='{name}' src='data:image/svg+xml;base64,{data}'>")
    parts.append("<h2 id='reports'>Text reports</h2>")
    for g in groups:
        for run in g.runs:
            for fname, text in run.reports.items():
                title = REPORT_TITLES.get(fname, fname)
                parts.append(f"<details><summary>{_esc(g.label)} seed {run.summary['seed']}: "
                             f"{_esc(title)} ({_esc(fname)})</summary><pre>{_esc(text)}</pre>"
                             "</details>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
