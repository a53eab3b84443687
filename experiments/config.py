"""Experiment files: TOML in, a fully validated `Experiment` out, or one `ConfigError` line that
names the file, the key and the reason.

Validation covers the whole file before anything runs: unknown keys, wrong types, bad units,
values that must be positive, unknown policies, tunables, cost names, workloads and cache names,
and missing files. `--set key.path=value` overrides are applied to the raw TOML first, so they
are validated the same way.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from experiments.events import EventError, EventSection, check_events
from policies import registry as policy_registry
from policies.base import KNOWN_CACHE_FLAGS
from simcore.costs import DEFAULT_COSTS
from simcore.units import Duration, Size
from workloads import registry as workload_registry


class ConfigError(Exception):
    """A bad experiment file or option; the message is one line naming key and reason."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    model_config = ConfigDict(extra="allow")
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


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _pydantic_message(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    msg = err["msg"]
    msg = re.sub(r"^Value error, ", "", msg)
    inp = err.get("input")
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal",
                "int_type", "int_parsing", "float_type", "float_parsing", "bool_type",
                "string_type", "list_type", "dict_type", "too_short", "literal_error"):
        msg = f"{msg[0].lower()}{msg[1:]} (got {inp!r})"
    return msg


def _raise(path: Path, exc: ValidationError, prefix: str = "") -> None:
    err = exc.errors()[0]
    loc = _loc(tuple(err["loc"]))
    key = f"{prefix}.{loc}" if prefix and loc != "(top level)" else (prefix or loc)
    raise ConfigError(f"{path}: {key}: {_pydantic_message(err)}") from None


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = [p for p in re.split(r"\.|\[(\d+)\]", dotted) if p]
    cur: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        key: Any = int(part) if part.isdigit() else part
        if isinstance(cur, list):
            if not isinstance(key, int) or key >= len(cur):
                raise ConfigError(f"--set {dotted}: no list element {part!r}")
        elif not isinstance(cur, dict):
            raise ConfigError(f"--set {dotted}: {part!r} is not inside a table")
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
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def load_raw(path: Path) -> dict[str, Any]:
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


RUN_FIELDS = ("base_dir", "source", "workload_params")
"""Experiment fields filled in by `validate`, not keys of the experiment file."""


def validate(data: dict[str, Any], path: Path) -> Experiment:
    """Validate a raw experiment mapping (already overridden); raises ConfigError."""
    for key in RUN_FIELDS:
        if key in data:
            raise ConfigError(f"{path}: {key}: unknown key")
    try:
        exp = Experiment.model_validate(data)
    except ValidationError as exc:
        _raise(path, exc)
    exp.base_dir = path.parent
    exp.source = path
    if not exp.name:
        exp.name = path.stem
    for key in exp.costs:
        if key not in DEFAULT_COSTS:
            raise ConfigError(f"{path}: costs.{key}: unknown cost (see `kmemsim costs`)")
    try:
        pol = policy_registry.get(exp.policy.name)
    except KeyError:
        known = ", ".join(sorted(policy_registry.available()))
        raise ConfigError(f"{path}: policy.name: unknown policy {exp.policy.name!r} "
                          f"(known: {known})") from None
    try:
        exp.policy.tunables = pol.resolve_tunables(exp.policy.tunables)
    except KeyError as exc:
        raise ConfigError(f"{path}: policy.tunables.{exc.args[0]}: unknown tunable for policy "
                          f"{exp.policy.name!r} (see `kmemsim policies`)") from None
    except ValueError as exc:
        bad = next(k for k in exp.policy.tunables
                   if _tunable_error(pol, k, exp.policy.tunables[k]))
        raise ConfigError(f"{path}: policy.tunables.{bad}: {exc}") from None
    names = [c.name for c in exp.caches]
    for i, n in enumerate(names):
        if names.index(n) != i:
            raise ConfigError(f"{path}: caches[{i}].name: duplicate cache name {n!r}")
    exp.workload_params = []
    checks = []
    for i, w in enumerate(exp.workloads):
        try:
            cls = workload_registry.get(w.kind)
        except KeyError:
            known = ", ".join(sorted(workload_registry.available()))
            raise ConfigError(f"{path}: workloads[{i}].kind: unknown workload {w.kind!r} "
                              f"(known: {known})") from None
        params = dict(w.model_extra or {})
        try:
            p = cls.Params.model_validate(params, context={"base_dir": path.parent})
        except ValidationError as exc:
            cause = exc.errors()[0].get("ctx", {}).get("error")
            if cause is not None and type(cause).__name__ == "TraceError":
                raise ConfigError(str(cause)) from None
            _raise(path, exc, prefix=f"workloads[{i}]")
        except ValueError as exc:
            raise ConfigError(f"{path}: workloads[{i}]: {exc}") from None
        names += [n for n in cls.creates(p) if n not in names]
        checks.append((i, p))
        exp.workload_params.append(p)
    if not names:
        raise ConfigError(f"{path}: caches: no caches (add [[caches]] tables or a workload "
                          "that creates its own, such as size_classes)")
    for i, p in checks:
        for key in ("cache", "caches"):
            ref = getattr(p, key, None)
            for n in [ref] if isinstance(ref, str) else (ref or []):
                if n not in names:
                    raise ConfigError(f"{path}: workloads[{i}].{key}: no cache named {n!r} "
                                      f"in [[caches]] or created by a workload")
    try:
        check_events(exp.events, exp.machine.nodes * exp.machine.cpus_per_node, names, pol)
    except EventError as exc:
        raise ConfigError(f"{path}: events[{exc.index}].{exc.key}: {exc}") from None
    return exp


def _tunable_error(pol: Any, key: str, value: Any) -> bool:
    try:
        pol.resolve_tunables({key: value})
    except (KeyError, ValueError):
        return True
    return False


def load_experiment(path: str | Path, overrides: list[str] | None = None,
                    seed: int | None = None) -> Experiment:
    """Read, override and validate an experiment file; raises ConfigError."""
    path = Path(path)
    data = load_raw(path)
    for item in overrides or []:
        key, value = parse_override(item)
        _set_path(data, key, value)
    if seed is not None:
        if seed < 0:
            raise ConfigError(f"--seed: must be >= 0 (got {seed})")
        data["seed"] = seed
    return validate(data, path)


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

