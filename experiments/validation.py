"""`kmemsim validate`: the published record, reproduced side by side.

A validation check is a file under `experiments/configs/validation/` with a `[validation]`
table that the experiment layer does not see (like a scenario's `[scenario]` table):

    [validation]
    summary = "one line"
    source = "Bonwick & Adams 2001, USENIX ATC, section 3.4"   # the paper or report
    inputs = ["what the check takes from the source", ...]
    compare = "which output is compared"
    check = "depot_working_set"          # a function of experiments.validation_checks
    slow = false                         # true: runs simulations (slow tests only)

    [validation.params]                  # the inputs, passed to the check function
    low = 37

    [validation.sources]                 # where every input, cost and tunable comes from
    "validation.params.low" = "B&A 2001 3.4: the list varies between 37 and 47"

    [[validation.rows]]                  # one per published number
    metric = "working_set"               # a key of the check function's result
    label = "working set (magazines)"
    published = 10
    tolerance = 0.0                      # relative (0.10 = within 10 %), or
    within = 0.02                        # absolute (|simulated - published| <= 0.02), or
    bound = "at_most"                    # simulated <= published ("at_least": >=), or
    factor = 2.0                         # within a factor 2 either way

A check function returns {metric: value} (and "<metric>_note": why a failing value fails;
"_figure": a function returning a matplotlib figure, written as validation-<check>.png);
a metric it cannot produce maps to a `Missing` with the reason, and its row fails with that reason rather than being dropped. Every key set
under `validation.params`, `costs` or `policy.tunables` needs a `validation.sources` entry
(tests/test_validation.py asserts it). The table is written whole (validation.md and
validation.json in a staged folder, swapped into place).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from experiments.config import ConfigError, load_raw
from experiments.output import StagedFolder

VALIDATION_DIR = Path(__file__).parent / "configs" / "validation"

_KEYS = {"summary", "source", "inputs", "compare", "check", "params", "sources", "rows", "slow"}
_ROW_KEYS = {"metric", "label", "published", "tolerance", "within", "bound", "factor", "unit"}
SOURCED_TABLES = ("validation.params", "costs", "policy.tunables")
"""Tables whose every key must name its source in `validation.sources`."""


@dataclass
class Missing:
    """A metric the model cannot produce, with the reason."""

    reason: str


@dataclass
class Row:
    metric: str
    label: str
    published: float
    tolerance: float | None = None
    bound: str | None = None
    factor: float | None = None
    """Within this factor of published either way (published / f <= simulated <= f x)."""
    unit: str = ""
    within: float | None = None
    """Absolute tolerance: |simulated - published| <= within."""


@dataclass
class Check:
    """A validation file."""

    name: str
    path: Path
    summary: str
    source: str
    inputs: list[str]
    compare: str
    check: str
    params: dict[str, Any]
    sources: dict[str, str]
    rows: list[Row]
    base: dict[str, Any] = field(default_factory=dict)
    slow: bool = False
    """Runs simulations: only the slow tests and the full `kmemsim validate` run it."""


@dataclass
class Result:
    check: str
    metric: str
    label: str
    published: float
    simulated: float | None
    tolerance: str
    verdict: str
    """"pass" or "fail"."""
    reason: str = ""
    source: str = ""


def flat_keys(data: Any, prefix: str = "") -> list[str]:
    """Dotted keys of the leaves of a TOML table."""
    if not isinstance(data, dict):
        return [prefix]
    out = []
    for k, v in data.items():
        out.extend(flat_keys(v, f"{prefix}.{k}" if prefix else k))
    return out


def sourced_keys(raw: dict[str, Any]) -> list[str]:
    """Every cost, tunable and check input a validation file sets (dotted)."""
    keys = []
    for table in SOURCED_TABLES:
        node: Any = raw
        for part in table.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            keys.extend(f"{table}.{k}" for k in flat_keys(node))
    return keys


def load(path: Path) -> Check:
    """Read a validation file; ConfigError naming the file and key if it is not one."""
    from experiments import validation_checks

    raw = load_raw(path)
    v = raw.get("validation")
    if not isinstance(v, dict):
        raise ConfigError(f"{path}: missing [validation] table")
    for key in v:
        if key not in _KEYS:
            raise ConfigError(f"{path}: validation.{key}: unknown key")
    for key in ("source", "check", "rows"):
        if key not in v:
            raise ConfigError(f"{path}: validation.{key}: missing")
    if v["check"] not in validation_checks.CHECKS:
        raise ConfigError(f"{path}: validation.check: unknown check {v['check']!r} (known: "
                          f"{', '.join(sorted(validation_checks.CHECKS))})")
    sources = v.get("sources", {})
    for key in sourced_keys(raw):
        if not str(sources.get(key, "")).strip():
            raise ConfigError(f"{path}: validation.sources: {key!r} has no source note")
    rows = []
    for i, r in enumerate(v["rows"]):
        extra = set(r) - _ROW_KEYS
        if extra:
            raise ConfigError(f"{path}: validation.rows[{i}].{sorted(extra)[0]}: unknown key")
        if "metric" not in r or "published" not in r:
            raise ConfigError(f"{path}: validation.rows[{i}]: needs metric and published")
        if r.get("bound") not in (None, "at_most", "at_least"):
            raise ConfigError(f"{path}: validation.rows[{i}].bound: at_most or at_least")
        rows.append(Row(r["metric"], r.get("label", r["metric"]), float(r["published"]),
                        r.get("tolerance"), r.get("bound"), r.get("factor"), r.get("unit", ""),
                        r.get("within")))
    base = {k: val for k, val in raw.items() if k != "validation"}
    return Check(path.stem, path, v.get("summary", ""), v["source"], list(v.get("inputs", [])),
                 v.get("compare", ""), v["check"], dict(v.get("params", {})), dict(sources),
                 rows, base, bool(v.get("slow", False)))


def available(directory: Path = VALIDATION_DIR) -> dict[str, Path]:
    """Shipped checks by name."""
    return {p.stem: p for p in sorted(directory.glob("*.toml"))}


def _verdict(row: Row, sim: float) -> tuple[str, str]:
    if row.bound == "at_most":
        return ("pass" if sim <= row.published else "fail"), "<= published"
    if row.bound == "at_least":
        return ("pass" if sim >= row.published else "fail"), ">= published"
    if row.factor:
        ok = row.published / row.factor <= sim <= row.published * row.factor
        return ("pass" if ok else "fail"), f"x/÷ {row.factor:g}"
    if row.within is not None:
        ok = abs(sim - row.published) <= row.within
        return ("pass" if ok else "fail"), f"±{row.within:g}"
    tol = row.tolerance or 0.0
    if tol == 0:
        return ("pass" if sim == row.published else "fail"), "exact"
    ok = abs(sim - row.published) <= tol * abs(row.published)
    return ("pass" if ok else "fail"), (f"±{tol:.1%}" if tol < 0.01 else f"±{tol:.0%}")


def evaluate(check: Check) -> list[Result]:
    """Run one check and compare each of its rows."""
    return compare(check, measure(check))


def measure(check: Check) -> dict[str, Any]:
    """Run one check's function: its values by metric (and notes, and maybe "_figure")."""
    from experiments import validation_checks

    return validation_checks.CHECKS[check.check](check)


def compare(check: Check, values: dict[str, Any]) -> list[Result]:
    """Compare a check's measured values with each of its rows."""
    out = []
    for row in check.rows:
        sim = values.get(row.metric, Missing(f"the check produced no {row.metric!r}"))
        if isinstance(sim, Missing):
            _, tol = _verdict(row, row.published)
            out.append(Result(check.name, row.metric, row.label, row.published, None, tol,
                              "fail", sim.reason, check.source))
            continue
        verdict, tol = _verdict(row, float(sim))
        note = values.get(f"{row.metric}_note", "") if verdict == "fail" else ""
        out.append(Result(check.name, row.metric, row.label, row.published, float(sim), tol,
                          verdict, note, check.source))
    return out


def _fmt(x: float | None) -> str:
    if x is None:
        return "—"
    if float(x).is_integer() and abs(x) < 1e15:
        return f"{int(x):,}"
    return f"{x:.4g}"


def markdown(results: list[Result]) -> str:
    """The table as Markdown."""
    lines = ["| check | value | published | simulated | tolerance | verdict |",
             "|---|---|---|---|---|---|"]
    for r in results:
        verdict = r.verdict if not r.reason else f"{r.verdict}: {r.reason}"
        lines.append(f"| {r.check} | {r.label} | {_fmt(r.published)} | {_fmt(r.simulated)} "
                     f"| {r.tolerance} | {verdict} |")
    return "\n".join(lines) + "\n"


def text_table(results: list[Result]) -> str:
    """The table for the terminal."""
    rows = [("check", "value", "published", "simulated", "tolerance", "verdict")]
    rows += [(r.check, r.label, _fmt(r.published), _fmt(r.simulated), r.tolerance,
              r.verdict + (f" ({r.reason})" if r.reason else "")) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row[:5], widths, strict=True)) + "  " + row[5]
                     for row in rows) + "\n"


def run(checks: list[Check], out: Path) -> list[Result]:
    """Evaluate the checks and write validation.md and validation.json into `out`, whole."""
    import matplotlib.pyplot as plt

    folder = StagedFolder(out).open()
    try:
        results: list[Result] = []
        figures: list[str] = []
        for c in checks:
            values = measure(c)
            results.extend(compare(c, values))
            draw = values.get("_figure")
            if draw is not None:
                fig = draw()
                figures.append(f"validation-{c.name}.png")
                folder.write_figure(figures[-1], fig)
                plt.close(fig)
        head = ["# kmemsim validate", "",
                f"{sum(r.verdict == 'pass' for r in results)} of {len(results)} values hold.",
                ""]
        sources = ["", "## Sources", ""] + [f"- **{c.name}**: {c.source}. Inputs: "
                                            f"{'; '.join(c.inputs)}." for c in checks]
        shown = ["", "## Figures", ""] + [f"![{f}]({f})" for f in figures] if figures else []
        folder.write_text("validation.md", "\n".join(head) + "\n" + markdown(results)
                          + "\n".join(sources + shown) + "\n")
        folder.write_text("validation.json", json.dumps(
            {"checks": [c.name for c in checks], "figures": figures,
             "results": [asdict(r) for r in results]}, indent=2, sort_keys=True) + "\n")
    except BaseException:
        folder.discard()
        raise
    folder.commit()
    return results
