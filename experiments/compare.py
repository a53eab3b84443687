"""`kmemsim compare`: figures and an HTML report comparing runs and sweeps.

Runs are grouped by their settings (the resolved config.toml without the seed): a group is one
configuration run over one or more seeds, and only seeds are averaged (the min-max spread over
them is shown). Each group's label is its policy and CPU count plus every setting that differs
between the groups compared (`spl 16 CPUs spl_kmem_cache_magazine_size=16`), so two groups never
share a label (runs of different experiments: the experiment names, when they suffice).
Time-series figures show one run per series (a series is the groups that differ
only in CPU count): the group with most CPUs, its lowest seed.

Written to `--out`: one PNG per figure (see experiments.compare_figures), `report.html`
(experiments.compare_html: every figure as inline SVG, each group's settings, the summary,
per-workload x per-cache and failed-point tables, every text report) and `runs.parquet`.
"""

from __future__ import annotations

import io
import json
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from experiments.load import Run, is_run, is_sweep, load_run, load_sweep  # noqa: E402
from experiments.output import RunFolder  # noqa: E402
from simcore.units import format_duration  # noqa: E402

IGNORED_KEYS = ("seed",)
"""Settings that do not separate groups: runs differing only here are averaged."""


@dataclass
class Failure:
    """A sweep point that did not finish."""

    sweep: str
    point: str
    label: str
    error: str


@dataclass
class Group:
    """Runs with identical settings but the seed."""

    label: str
    series: str
    """The label without the CPU count (lines of the scaling figure)."""
    runs: list[Run]
    settings: dict[str, Any]
    config: dict[str, Any]
    """The resolved config.toml of the first run."""
    config_text: str
    differs: list[str] = field(default_factory=list)
    """The setting keys (dotted) that differ between the groups compared."""

    @property
    def policy(self) -> str:
        return self.runs[0].policy

    @property
    def cpus(self) -> int:
        return self.runs[0].cpus

    @property
    def seeds(self) -> list[int]:
        return sorted(int(r.summary["seed"]) for r in self.runs)

    @property
    def representative(self) -> Run:
        return min(self.runs, key=lambda r: int(r.summary["seed"]))


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys (`workloads[1].think`, `policy.tunables.X`) of a nested config."""
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(data, list) and data and all(isinstance(v, dict) for v in data):
        for i, v in enumerate(data):
            out.update(flatten(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = data
    return out


def _config(run: Run) -> tuple[dict[str, Any], str]:
    p = run.path / "config.toml"
    if not p.exists():
        return {}, ""
    text = p.read_text()
    return tomllib.loads(text), text


def load_inputs(paths: Sequence[str | Path]) -> list[Run]:
    """Runs from run folders and sweep folders (every finished point of a sweep)."""
    return _load(paths)[0]


def load_failures(paths: Sequence[str | Path]) -> list[Failure]:
    """Sweep points that ended in an error, with their error line."""
    return _load(paths)[1]


def _load(paths: Sequence[str | Path]) -> tuple[list[Run], list[Failure]]:
    runs: list[Run] = []
    failures: list[Failure] = []
    for p in paths:
        if is_sweep(p):
            table, by_id = load_sweep(p, runs=True)
            runs.extend(by_id[k] for k in sorted(by_id))
            for row in table[table.status == "error"].itertuples():
                failures.append(Failure(str(p), str(row.point), str(row.label), str(row.error)))
        elif is_run(p):
            runs.append(load_run(p))
        else:
            raise FileNotFoundError(f"{p}: neither a run folder nor a sweep folder")
    if not runs:
        raise FileNotFoundError("no finished runs in " + ", ".join(map(str, paths)))
    return runs, failures


def _short(key: str, value: Any) -> str:
    if key == "duration" and isinstance(value, int):
        return f"duration={format_duration(value)}"
    if key.startswith("policy.tunables."):
        return f"{key.removeprefix('policy.tunables.')}={value}"
    if key == "name":
        return str(value)
    return f"{key}={value}"


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """Runs grouped by identical settings (all but the seed), labelled by what differs."""
    by_key: dict[str, list[tuple[Run, dict[str, Any], dict[str, Any], str]]] = {}
    for r in runs:
        cfg, text = _config(r)
        flat = {k: v for k, v in flatten(cfg).items() if k not in IGNORED_KEYS}
        if (r.path / "point.json").exists() and str(flat.get("name", "")).endswith(
                "-" + r.path.name):  # a sweep point's name carries its id: not a setting
            flat["name"] = str(flat["name"]).removesuffix("-" + r.path.name)
        if not flat:  # a run folder without config.toml: what summary.json says
            flat = {"policy.name": r.policy, "machine.cpus": r.cpus,
                    "name": r.summary.get("experiment", "")}
        key = json.dumps(flat, sort_keys=True, default=str)
        by_key.setdefault(key, []).append((r, flat, cfg, text))
    groups_raw = list(by_key.values())
    values: dict[str, set[str]] = {}
    for members in groups_raw:
        for k, v in members[0][1].items():
            values.setdefault(k, set()).add(json.dumps(v, sort_keys=True, default=str))
    differs = [k for k, vals in values.items() if len(vals) > 1
               and k not in ("policy.name", "machine.cpus_per_node", "machine.nodes",
                             "description")]
    in_label = differs
    if "name" in differs:  # experiments compared: their names, if they tell them apart
        heads = [(m[0][0].policy, m[0][0].cpus, m[0][1].get("name")) for m in groups_raw]
        in_label = ["name"] if len(set(heads)) == len(heads) else ["name"] + [
            k for k in differs if k != "name" and not k.startswith(("caches[", "workloads["))]
    groups = []
    for members in groups_raw:
        run0, flat, cfg, text = members[0]
        extra = [_short(k, flat[k]) for k in in_label if k in flat]
        series = " ".join([run0.policy, *extra])
        label = " ".join([run0.policy, f"{run0.cpus} CPUs", *extra])
        groups.append(Group(label, series, [m[0] for m in members], flat, cfg, text,
                            [k for k in differs if k in flat]))
    seen: dict[str, int] = {}
    for g in groups:
        n = seen.get(g.label, 0)
        seen[g.label] = n + 1
        if n:
            g.label += f" #{n + 1}"
    groups.sort(key=lambda g: (_policy_order(g.policy), g.series, g.cpus))
    for g in groups:
        for r in g.runs:
            r.label = g.label
        g.runs.sort(key=lambda r: int(r.summary["seed"]))
    return groups


POLICY_ORDER = ("global_lock", "spl", "solaris", "linux_slab", "slub")


def _policy_order(policy: str) -> int:
    return POLICY_ORDER.index(policy) if policy in POLICY_ORDER else len(POLICY_ORDER)


def representatives(groups: Sequence[Group]) -> list[Run]:
    """One run per series for time-series figures: the group with most CPUs, lowest seed."""
    best: dict[str, Group] = {}
    for g in groups:
        cur = best.get(g.series)
        if cur is None or g.cpus > cur.cpus:
            best[g.series] = g
    return [best[s].representative for s in dict.fromkeys(g.series for g in groups)]


METRICS = ("ops_per_sim_s", "ops_per_cpu_ms", "alloc_mean_ns", "alloc_p99_ns",
           "alloc_p999_ns", "alloc_max_ns", "free_mean_ns", "lock_contentions",
           "lock_wait_share", "irq_off_share", "irq_off_max_ns", "bytes_peak_mib",
           "held_over_requested_end")
"""Per-run figures of the summary table (averaged over seeds, with their min and max)."""


def run_row(r: Run) -> dict[str, Any]:
    """The headline figures of one run (`Run.headline`) plus their per-CPU and share forms."""
    h = r.headline
    s = r.summary
    end = h["end_ns"] or 1
    alloc = s["latency"].get("latency.alloc", {})
    caches = s.get("caches", {})
    held = sum(c.get("bytes_total", 0) for c in caches.values())
    req = sum(c.get("bytes_requested", 0) for c in caches.values())
    return {"label": r.label, "policy": r.policy, "cpus": r.cpus, "seed": s["seed"],
            "status": s["status"], "ops_per_sim_s": h["ops_per_sim_s"],
            "ops_per_cpu_ms": h["ops_per_sim_s"] / r.cpus / 1e3,
            "alloc_mean_ns": h["alloc_mean_ns"], "alloc_p99_ns": h["alloc_p99_ns"],
            "alloc_p999_ns": alloc.get("p99.9", 0.0), "alloc_max_ns": alloc.get("max", 0),
            "free_mean_ns": h["free_mean_ns"], "lock_contentions": h["lock_contentions"],
            "lock_wait_share": h["lock_wait_ns"] / (end * r.cpus),
            "irq_off_share": h["irq_off_share"], "irq_off_max_ns": h["irq_off_max_ns"],
            "bytes_peak_mib": h["bytes_total_peak"] / 2**20,
            "held_over_requested_end": held / req if req else 0.0}


def results_frame(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per run (see `run_row`)."""
    return pd.DataFrame([run_row(r) for r in runs])


def group_frame(groups: Sequence[Group]) -> pd.DataFrame:
    """One row per group: the mean of each METRICS column over its seeds, with `<col>_min`
    and `<col>_max`."""
    rows = []
    for g in groups:
        df = results_frame(g.runs)
        row: dict[str, Any] = {"label": g.label, "policy": g.policy, "cpus": g.cpus,
                               "series": g.series, "seeds": " ".join(map(str, g.seeds)),
                               "runs": len(g.runs),
                               "status": ", ".join(sorted(set(df.status)))}
        for col in METRICS:
            row[col] = float(df[col].mean())
            row[f"{col}_min"] = float(df[col].min())
            row[f"{col}_max"] = float(df[col].max())
        rows.append(row)
    return pd.DataFrame(rows)


def _lock_wait_of(run: Run, cache: str) -> int:
    return sum(int(v["waittime_total_ns"]) for k, v in run.summary["locks"].items()
               if k.startswith(f"{cache}->"))


def workload_cache_frame(groups: Sequence[Group]) -> pd.DataFrame:
    """One row per group x workload x cache: allocs, frees, failures, alloc latency quantiles
    (ns), the wait for the cache's locks (all workloads together, ms) and the cache's memory
    held and requested at the end (MiB); means over the group's seeds."""
    rows = []
    for g in groups:
        per: list[dict[str, Any]] = []
        for r in g.runs:
            caches = r.summary.get("caches", {})
            for w in r.summary.get("workloads", []):
                for cname, c in w.get("caches", {}).items():
                    a = c["alloc"]
                    st = caches.get(cname, {})
                    per.append({"group": g.label, "workload": w.get("label", w["kind"]),
                                "cache": cname, "allocs": c["allocs"], "frees": c["frees"],
                                "failures": c["alloc_failures"], "alloc_p50_ns": a["p50"],
                                "alloc_p99_ns": a["p99"], "alloc_p99.9_ns": a["p99.9"],
                                "alloc_max_ns": a["max"],
                                "cache_lock_wait_ms": _lock_wait_of(r, cname) / 1e6,
                                "cache_held_mib": st.get("bytes_total", 0) / 2**20,
                                "cache_requested_mib": st.get("bytes_requested", 0) / 2**20})
        if per:
            df = pd.DataFrame(per)
            rows.append(df.groupby(["group", "workload", "cache"], sort=False)
                        .mean(numeric_only=True).reset_index())
    if not rows:
        return pd.DataFrame(columns=["group", "workload", "cache"])
    return pd.concat(rows, ignore_index=True)


def _svg(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()


def compare(paths: Sequence[str | Path], out: str | Path) -> list[Path]:
    """Load `paths`, write every figure (PNG) and report.html into `out`; the files written."""
    from experiments.compare_figures import figures
    from experiments.compare_html import render_html
    runs, failures = _load(paths)
    groups = group_runs(runs)
    folder = RunFolder(Path(out))
    written = []
    svgs = {}
    plt.rcParams["svg.hashsalt"] = "kmemsim"
    for name, fig in figures(groups).items():
        written.append(folder.write_figure(f"{name}.png", fig, dpi=100))
        svgs[name] = _svg(fig)
        plt.close(fig)
    written.append(folder.write_text("report.html", render_html(groups, failures, svgs)))
    written.append(folder.write_parquet("runs.parquet", results_frame(runs)))
    return written
