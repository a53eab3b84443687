"""What a scenario variant is expected to reproduce, and whether it did.

Each `[[scenario.variants]]` table may carry an `expect` table:

    expect = { status = "deadlock" }
    expect = { emergency_max = { min = 1000 }, emergency_left = 0, deadlocked_after_ns = "100ms" }

`status` is the run's ending (ok, the default, or deadlock); every other key names a fact (see
`scenarios.FACTS`) and gives either the exact value or a range `{ min = ..., max = ... }`
(either bound may be left out; both inclusive). Facts ending in `_ns` accept durations with
units. `kmemsim scenario` exits 0 when every variant met its expectation (an expected deadlock
included) and 4, naming the variant and the fact, when one did not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.problems import ConfigError, show
from simcore.units import format_duration, parse_duration

EXIT_UNEXPECTED = 4
"""Exit status of `kmemsim scenario` when a variant did not reproduce its expectation."""

STATUSES = ("ok", "deadlock")
"""Endings a variant may expect."""


@dataclass
class Check:
    """One expected fact: an exact value, or an inclusive range."""

    fact: str
    exact: Any = None
    minimum: float | None = None
    maximum: float | None = None
    is_range: bool = False

    def failure(self, value: Any) -> str | None:
        """Why `value` does not meet the check, or None."""
        if not self.is_range:
            if _same(value, self.exact):
                return None
            return f"{self.fact} = {self._show(value)}, expected {self._show(self.exact)}"
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return f"{self.fact} = {self._show(value)}, expected a number in {self._range()}"
        if (self.minimum is not None and value < self.minimum) or \
                (self.maximum is not None and value > self.maximum):
            return f"{self.fact} = {self._show(value)}, outside the expected {self._range()}"
        return None

    def _range(self) -> str:
        lo = "" if self.minimum is None else self._show(self.minimum)
        hi = "" if self.maximum is None else self._show(self.maximum)
        return f"[{lo or '-inf'}, {hi or 'inf'}]"

    def _show(self, v: Any) -> str:
        if self.fact.endswith("_ns") and isinstance(v, (int, float)) and not isinstance(v, bool):
            return format_duration(v)
        return show(v)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and \
            not isinstance(a, bool) and not isinstance(b, bool):
        return abs(a - b) <= 1e-9 * max(1.0, abs(b))
    return bool(a == b)


@dataclass
class Expectation:
    """A variant's expected ending and facts."""

    status: str = "ok"
    checks: tuple[Check, ...] = ()

    @property
    def facts(self) -> list[str]:
        return [c.fact for c in self.checks]

    def failures(self, status: str, facts: dict[str, Any]) -> list[str]:
        """What the variant did not reproduce, one line per fact."""
        out = []
        if status != self.status:
            out.append(f"status = {status}, expected {self.status}")
        if status == "error":
            return out
        for c in self.checks:
            why = c.failure(facts.get(c.fact))
            if why is not None:
                out.append(why)
        return out


def parse(path: Path, where: str, raw: Any, known_facts: set[str]) -> Expectation:
    """The `expect` table at `where` (e.g. scenario.variants[1].expect); ConfigError listing
    every problem."""
    if raw is None:
        return Expectation()
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {where}: expected a table, got {show(raw)}")
    problems = []
    status = raw.get("status", "ok")
    if status not in STATUSES:
        problems.append(f"{path}: {where}.status: expected one of {', '.join(STATUSES)}, got "
                        f"{show(status)}")
    checks = []
    for fact, spec in raw.items():
        if fact == "status":
            continue
        if fact not in known_facts:
            problems.append(f"{path}: {where}.{fact}: unknown fact (known: "
                            f"{', '.join(sorted(known_facts))})")
            continue
        try:
            checks.append(_check(fact, spec))
        except ValueError as exc:
            problems.append(f"{path}: {where}.{fact}: {exc}")
    if problems:
        raise ConfigError(problems)
    return Expectation(str(status), tuple(checks))


def _check(fact: str, spec: Any) -> Check:
    if isinstance(spec, dict):
        extra = set(spec) - {"min", "max"}
        if extra or not spec:
            raise ValueError("a range is { min = ..., max = ... }"
                             + (f" (unknown key {sorted(extra)[0]!r})" if extra else ""))
        lo, hi = (_number(fact, spec.get(k)) for k in ("min", "max"))
        if lo is not None and hi is not None and hi < lo:
            raise ValueError(f"max ({spec['max']!r}) is below min ({spec['min']!r})")
        return Check(fact, minimum=lo, maximum=hi, is_range=True)
    if fact.endswith("_ns") and isinstance(spec, str):
        return Check(fact, exact=parse_duration(spec))
    return Check(fact, exact=spec)


def _number(fact: str, v: Any) -> float | None:
    if v is None:
        return None
    if fact.endswith("_ns") and isinstance(v, str):
        return parse_duration(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"range bounds are numbers, got {show(v)}")
    return v
