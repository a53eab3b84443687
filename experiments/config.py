"""Experiment files: TOML in, a fully validated `Experiment` out, or a `ConfigError` with one
line per problem, each naming the file (or `--set`), the key and the reason.

Validation covers the whole file before anything runs: unknown keys, wrong types (booleans are
not numbers, 2.5 is not an integer), bad or ambiguous units, values that must be positive,
ordered watermarks, empty intervals, unknown policies, tunables, cost names, workloads and cache
names, workload CPUs beyond the machine, and missing files. `--set key.path=value` overrides
are applied to the raw TOML first, so they are validated the same way, and a problem at or
below an overridden key names `--set`. The rules are listed in docs/experiments.md.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from experiments.events import EventError, EventSection, check_events
from experiments.problems import ConfigError, Problems, key_parts
from policies import registry as policy_registry
from policies.base import KNOWN_CACHE_FLAGS
from simcore.costs import DEFAULT_COSTS
from simcore.units import Duration, Size, plural
from workloads import registry as workload_registry


class _Section(BaseModel):
    # strict: true is not 1 and 2.5 is not 2 (TOML has real integers and booleans)
    model_config = ConfigDict(extra="forbid", strict=True)


class MachineSection(_Section):
    nodes: int = Field(1, gt=0, description="NUMA nodes")
    cpus_per_node: int = Field(4, gt=0, le=4096, description="CPUs per node")
    hz: int = Field(1000, gt=0, description="timer ticks per second (CONFIG_HZ)")
    sched_slice: Duration = Field(3_000_000, gt=0, description="time slice before preemption")
    preempt: Literal["none", "voluntary", "full"] = Field(
        "voluntary", description="preemption model (CONFIG_PREEMPT_NONE/VOLUNTARY/PREEMPT)")
    sched_wakeup_granularity: Duration = Field(
        0, ge=0, description="CFS wake-up granularity (0 = 1ms x (1 + log2(min(CPUs, 8))))")
    sched_latency: Duration = Field(
        0, ge=0, description="CFS latency; sleepers get half of it (0 = 6ms x the same factor)")
    batching: bool = Field(True, description="charge local work without events (fast path)")
    fast_paths: bool = Field(True, description="use the policies' plain-function fast paths")
    hung_task_timeout: Duration = Field(0, ge=0, description="watchdog limit (0 = off)")
    deadlock_check: Duration = Field(10_000_000, ge=0,
                                     description="period of the wait-for cycle check (0 = off)")
    deadlock_timed_limit: Duration = Field(
        1_000_000_000, gt=0, description="no-progress time before a cycle through a timed wait "
                                         "counts as a deadlock")


class FailWindowSection(_Section):
    start: Duration = Field(ge=0)
    end: Duration = Field(gt=0)
    probability: float = Field(1.0, ge=0, le=1)


class MemorySection(_Section):
    size: Size = Field(4 << 30, gt=0, description="RAM")
    page_size: Size = Field(4096, gt=0)
    watermark_min: float = Field(0.01, ge=0, lt=1)
    watermark_low: float = Field(0.02, ge=0, lt=1)
    watermark_high: float = Field(0.03, ge=0, lt=1)
    reclaimable: Size = Field(0, ge=0, description="clean page cache reclaim can drop")
    fail_probability: float = Field(0.0, ge=0, le=1)
    fail_windows: list[FailWindowSection] = Field(default_factory=list)

    @field_validator("page_size")
    @classmethod
    def _pow2(cls, v: int) -> int:
        if v & (v - 1):
            raise ValueError(f"must be a power of two, got {v}")
        return v


class PolicySection(_Section):
    name: str
    tunables: dict[str, Any] = Field(default_factory=dict)


class CacheSection(_Section):
    name: str = Field(min_length=1)
    size: Size = Field(gt=0)
    align: int = Field(8, gt=0)
    ctor_cost: Duration = Field(0, ge=0)
    dtor_cost: Duration = Field(0, ge=0)
    flags: list[str] = Field(default_factory=list)

    @field_validator("align")
    @classmethod
    def _pow2(cls, v: int) -> int:
        if v & (v - 1):
            raise ValueError(f"must be a power of two, got {v}")
        return v

    @field_validator("flags")
    @classmethod
    def _flags(cls, v: list[str]) -> list[str]:
        for f in v:
            if f not in KNOWN_CACHE_FLAGS:
                raise ValueError(f"unknown cache flag {f!r}")
        return v


class SamplingSection(_Section):
    interval: Duration = Field(1_000_000, gt=0, description="timeline sampling interval")
    max_samples: int = Field(20_000, ge=100)
    max_events: int = Field(100_000, ge=100)


class WorkloadSection(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    kind: str


class Experiment(_Section):
    """A validated experiment file."""

    name: str = ""
    description: str = ""
    seed: int = Field(0, ge=0)
    duration: Duration = Field(gt=0)
    machine: MachineSection = Field(default_factory=MachineSection)
    costs: dict[str, Duration] = Field(default_factory=dict)
    memory: MemorySection = Field(default_factory=MemorySection)
    policy: PolicySection
    caches: list[CacheSection] = Field(default_factory=list)
    workloads: list[WorkloadSection] = Field(min_length=1)
    sampling: SamplingSection = Field(default_factory=SamplingSection)
    events: list[EventSection] = Field(default_factory=list)
    """CPU hotplug and retune events (experiments/events.py)."""
    sweep: dict[str, Any] | None = None

    base_dir: Path = Field(default=Path("."), exclude=True)
    source: Path = Field(default=Path("experiment.toml"), exclude=True)
    """The experiment file (error messages name it)."""
    workload_params: list[Any] = Field(default_factory=list, exclude=True)


def _set_path(data: dict[str, Any], dotted: str, value: Any, who: str | None = None) -> None:
    """Set `dotted` (a.b[0].c) in `data`; ConfigError naming `who` (default `--set KEY`)
    when the path does not fit the data."""
    who = who or f"--set {dotted}"
    parts = key_parts(dotted)
    cur: Any = data
    for i, key in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(cur, list):
            if not isinstance(key, int) or key >= len(cur):
                raise ConfigError(f"{who}: no list element {key!r} (the list has {len(cur)})")
        elif not isinstance(cur, dict):
            raise ConfigError(f"{who}: {key!r} is not inside a table")
        elif isinstance(key, int):
            raise ConfigError(f"{who}: [{key}] indexes something that is not a list")
        if last:
            cur[key] = value
        else:
            if isinstance(cur, dict) and key not in cur:
                cur[key] = {}
            cur = cur[key]


def parse_override(item: str) -> tuple[str, Any]:
    """`key.path=value` -> (path, value); the value is read as TOML, else as a string."""
    if "=" not in item:
        raise ConfigError(f"--set {item}: expected key.path=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {item}: empty key")
    if not re.fullmatch(r"[A-Za-z_][\w-]*(\[\d+\])*(\.[\w-]+(\[\d+\])*)*", key):
        raise ConfigError(f"--set {item}: {key!r} is not a key path such as machine.hz or "
                          "workloads[0].live_objects")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def load_raw(path: Path) -> dict[str, Any]:
    """The TOML tables of an experiment file; ConfigError if it cannot be read."""
    if not path.exists():
        raise ConfigError(f"{path}: no such experiment file")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not an experiment file")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None


RUN_FIELDS = ("base_dir", "source", "workload_params")
"""Experiment fields filled in by `validate`, not keys of the experiment file."""

MAX_CPUS = 4096
"""Most CPUs a machine may have (nodes x cpus_per_node)."""


def validate(data: dict[str, Any], path: Path, overrides: list[str] | None = None) -> Experiment:
    """Validate a raw experiment mapping (already overridden by the `overrides` keys, which
    problems at or below them blame); raises ConfigError listing every problem found."""
    pr = Problems(path, overrides)
    if "scenario" in data:
        raise ConfigError(f"{path}: scenario: this is a scenario file; run it with "
                          f"`kmemsim scenario {path}`")
    if "validation" in data:
        raise ConfigError(f"{path}: validation: this is a validation check; run it with "
                          f"`kmemsim validate --only {path.stem}`")
    for key in RUN_FIELDS:
        if key in data:
            pr.add(key, "unknown key")
    exp = None
    try:
        exp = Experiment.model_validate({k: v for k, v in data.items() if k not in RUN_FIELDS})
    except ValidationError as exc:
        pr.add_pydantic(exc.errors())
    _check_costs(data.get("costs"), pr)
    tunables = _check_policy(data.get("policy"), pr)
    params = _check_workloads(data.get("workloads"), path, pr)
    pr.check()
    if exp is None or params is None or tunables is None:
        raise ConfigError(f"{path}: not a valid experiment")
    exp.base_dir = path.parent
    exp.source = path
    if not exp.name:
        exp.name = path.stem
    exp.policy.tunables = tunables
    exp.workload_params = params
    _check_references(exp, pr)
    pr.check()
    return exp


def _check_costs(costs: Any, pr: Problems) -> None:
    if isinstance(costs, dict):
        for key in costs:
            if key not in DEFAULT_COSTS:
                pr.add(f"costs.{key}", "unknown cost (see `kmemsim costs`)")


def _check_policy(section: Any, pr: Problems) -> dict[str, Any] | None:
    """The policy's resolved tunables, or None (problems added)."""
    if not isinstance(section, dict) or not isinstance(section.get("name"), str):
        return None
    name = section["name"]
    try:
        pol = policy_registry.get(name)
    except KeyError:
        known = ", ".join(sorted(policy_registry.available()))
        pr.add("policy.name", f"unknown policy {name!r} (known: {known})")
        return None
    given = section.get("tunables", {})
    if not isinstance(given, dict):
        return None
    ok = True
    for key, value in given.items():
        try:
            pol.resolve_tunables({key: value})
        except KeyError:
            pr.add(f"policy.tunables.{key}", f"unknown tunable for policy {name!r} "
                                             "(see `kmemsim policies`)")
            ok = False
        except ValueError as exc:
            pr.add(f"policy.tunables.{key}", str(exc))
            ok = False
    return pol.resolve_tunables(given) if ok else None


def _check_workloads(section: Any, path: Path, pr: Problems) -> list[Any] | None:
    """Each workload's validated parameters, or None (problems added)."""
    if not isinstance(section, list):
        return None
    out: list[Any] = []
    for i, w in enumerate(section):
        p = _workload_params(i, w, path, pr)
        if p is not None:
            out.append(p)
    return out if len(out) == len(section) else None


def _workload_params(i: int, w: Any, path: Path, pr: Problems) -> Any:
    if not isinstance(w, dict) or not isinstance(w.get("kind"), str):
        return None  # the experiment model reports it
    try:
        cls = workload_registry.get(w["kind"])
    except KeyError:
        known = ", ".join(sorted(workload_registry.available()))
        pr.add(f"workloads[{i}].kind", f"unknown workload {w['kind']!r} (known: {known})")
        return None
    params = {k: v for k, v in w.items() if k != "kind"}
    try:
        return cls.Params.model_validate(params, context={"base_dir": path.parent})
    except ValidationError as exc:
        pr.add_pydantic(exc.errors(), prefix=("workloads", i))
    except ValueError as exc:
        pr.add(f"workloads[{i}]", str(exc))
    return None


def _check_references(exp: Experiment, pr: Problems) -> None:
    """Checks across sections: cache names, CPUs that exist, intervals inside the run."""
    names = [c.name for c in exp.caches]
    for i, n in enumerate(names):
        if names.index(n) != i:
            pr.add(f"caches[{i}].name", f"duplicate cache name {n!r}")
    _check_memory(exp.memory, pr)
    ncpus = exp.machine.nodes * exp.machine.cpus_per_node
    if ncpus > MAX_CPUS:
        pr.add("machine.nodes", f"{exp.machine.nodes} nodes x {exp.machine.cpus_per_node} CPUs "
                                f"is {ncpus} CPUs; at most {MAX_CPUS}")
    for i, (w, p) in enumerate(zip(exp.workloads, exp.workload_params, strict=True)):
        names += [n for n in workload_registry.get(w.kind).creates(p) if n not in names]
        _check_cpus(i, p, ncpus, pr)
        _check_interval(i, p, pr)
    if not names:
        pr.add("caches", "no caches (add [[caches]] tables or a workload that creates its own, "
                         "such as size_classes)")
    for i, p in enumerate(exp.workload_params):
        for key in ("cache", "caches"):
            ref = getattr(p, key, None)
            for n in [ref] if isinstance(ref, str) else (ref or []):
                if n not in names:
                    pr.add(f"workloads[{i}].{key}", f"no cache named {n!r} in [[caches]] or "
                                                    "created by a workload")
    try:
        check_events(exp.events, ncpus, names, policy_registry.get(exp.policy.name))
    except EventError as exc:
        pr.add(f"events[{exc.index}].{exc.key}", str(exc))


def _check_memory(mem: MemorySection, pr: Problems) -> None:
    """Zone watermarks are ordered, min <= low <= high (mm/page_alloc.c
    __setup_per_zone_wmarks); a failure window is a non-empty interval."""
    if mem.watermark_low < mem.watermark_min:
        pr.add("memory.watermark_low", f"watermark_low must be >= watermark_min (low "
                                       f"{mem.watermark_low}, min {mem.watermark_min})")
    if mem.watermark_high < mem.watermark_low:
        pr.add("memory.watermark_high", f"watermark_high must be >= watermark_low (high "
                                        f"{mem.watermark_high}, low {mem.watermark_low})")
    for i, w in enumerate(mem.fail_windows):
        if w.end <= w.start:
            pr.add(f"memory.fail_windows[{i}].end", f"must be after start (empty interval: "
                                                    f"start {w.start} ns, end {w.end} ns)")


def _check_cpus(i: int, params: Any, ncpus: int, pr: Problems) -> None:
    for key in ("cpus", "cpu"):
        value = getattr(params, key, None)
        for c in [value] if isinstance(value, int) else (value or []):
            if c >= ncpus:
                pr.add(f"workloads[{i}].{key}", f"CPU {c} is beyond the machine "
                                               f"({plural(ncpus, 'CPU')}: 0-{ncpus - 1})")
                break


def _check_interval(i: int, params: Any, pr: Problems) -> None:
    """A workload's [start, stop) is not empty. (A start after the end of the run is allowed:
    scenarios use it to switch a workload off.)"""
    start = getattr(params, "start", None)
    stop = getattr(params, "stop", None)
    if isinstance(start, int) and isinstance(stop, int) and stop <= start:
        pr.add(f"workloads[{i}].stop", f"must be after start (empty interval: start {start} ns, "
                                       f"stop {stop} ns)")


def load_experiment(path: str | Path, overrides: list[str] | None = None,
                    seed: int | None = None) -> Experiment:
    """Read, override and validate an experiment file; raises ConfigError."""
    path = Path(path)
    data = load_raw(path)
    keys = apply_overrides(data, overrides or [])
    if seed is not None:
        if seed < 0:
            raise ConfigError(f"--seed: must be >= 0 (got {seed})")
        data["seed"] = seed
    return validate(data, path, keys)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> list[str]:
    """Apply `--set key=value` items to `data`; the keys set."""
    keys = []
    for item in overrides:
        key, value = parse_override(item)
        _set_path(data, key, value)
        keys.append(key)
    return keys


def resolved_dict(exp: Experiment) -> dict[str, Any]:
    """The experiment with every default filled in, for config.toml in the run folder."""
    data = exp.model_dump(mode="json", exclude_none=True)
    data["workloads"] = [
        {"kind": w.kind, **p.model_dump(mode="json", exclude_none=True)}
        for w, p in zip(exp.workloads, exp.workload_params, strict=True)
    ]
    if exp.sweep is None:
        data.pop("sweep", None)
    return data

