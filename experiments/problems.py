"""Bad-input reports: every problem of an experiment file (or of a `--set` override) as one
line naming where it came from, the key and the reason, without internal class names.

`Problems` collects the lines while a file is validated so that a file with several mistakes
gets all of them at once; `ConfigError` carries them to the command line (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """Bad input: one line per problem, each naming the file (or --set), the key and the
    reason."""

    def __init__(self, lines: str | list[str]) -> None:
        self.lines = [lines] if isinstance(lines, str) else list(lines)
        """The problems, one line each."""
        super().__init__("\n".join(self.lines))


def key_parts(dotted: str) -> list[str | int]:
    """`caches[0].size` -> ["caches", 0, "size"]."""
    return [int(p) if p.isdigit() else p for p in re.split(r"\.|\[(\d+)\]", dotted) if p]


def join_key(parts: tuple[Any, ...] | list[Any]) -> str:
    """["caches", 0, "size"] -> `caches[0].size` (the form experiment files and --set use)."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def show(value: Any) -> str:
    """A value as TOML would spell it, shortened: true, 2.5, "4 KB", {...}."""
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


_BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="),
           "less_than": ("lt", "<"), "less_than_equal": ("le", "<=")}
_TYPES = {"int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
          "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
          "bool_parsing": "true or false", "string_type": "a string", "list_type": "a list",
          "dict_type": "a table", "model_type": "a table", "model_attributes_type": "a table",
          "dataclass_type": "a table", "tuple_type": "a list", "set_type": "a list"}


def pydantic_reason(err: dict[str, Any]) -> str:
    """The reason of one pydantic error, in the project's words (no class names)."""
    kind = err["type"]
    inp = err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind in _TYPES:
        extra = " (booleans are not numbers)" if isinstance(inp, bool) and \
            _TYPES[kind] in ("an integer", "a number") else ""
        return f"expected {_TYPES[kind]}, got {show(inp)}{extra}"
    if kind in _BOUNDS:
        name, op = _BOUNDS[kind]
        return f"must be {op} {ctx.get(name)}, got {show(inp)}"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s), got {show(inp)}"
    if kind == "too_long":
        return f"takes at most {ctx.get('max_length')} item(s), got {show(inp)}"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')}, got {show(inp)}"
    if kind == "literal_error":
        return f"expected {ctx.get('expected')}, got {show(inp)}"
    if kind == "value_error":
        return re.sub(r"^Value error, ", "", str(err["msg"]))
    msg = re.sub(r"\s*(or )?instance of \w+", "", str(err["msg"]))
    msg = re.sub(r"^Input should be", "expected", msg)
    return f"{msg[:1].lower()}{msg[1:]} (got {show(inp)})"


class Problems:
    """The problems found in one experiment file, with the `--set` overrides that may have
    caused them (a problem at or below an overridden key is blamed on `--set`)."""

    def __init__(self, path: Path, overrides: list[str] | None = None) -> None:
        self.path = path
        """The experiment file."""
        self.overrides = [(key_parts(k), k) for k in overrides or []]
        """(parts, dotted) of each `--set` key."""
        self.lines: list[str] = []
        """The problems so far."""

    def source(self, key: str) -> tuple[str, str | None]:
        """Who set `key`: ("--set K", K) or (the file, None)."""
        parts = key_parts(key)
        for ov_parts, dotted in reversed(self.overrides):
            if parts[:len(ov_parts)] == ov_parts:
                return f"--set {dotted}", dotted
        return str(self.path), None

    def add(self, key: str, reason: str) -> None:
        """One problem at `key` (dotted, as in the file)."""
        src, dotted = self.source(key)
        line = f"{src}: {reason}" if dotted == key else f"{src}: {key}: {reason}"
        if line not in self.lines:
            self.lines.append(line)

    def add_line(self, line: str) -> None:
        """A problem that already names its own file (a trace file's `file:line: reason`)."""
        if line not in self.lines:
            self.lines.append(line)

    def add_pydantic(self, errors: list[dict[str, Any]], prefix: tuple[Any, ...] = ()) -> None:
        """Every error of a pydantic ValidationError, located under `prefix`."""
        for err in errors:
            cause = (err.get("ctx") or {}).get("error")
            if cause is not None and type(cause).__name__ == "TraceError":
                self.add_line(str(cause))
                continue
            loc = tuple(p for p in err["loc"] if not _internal_loc(p))
            self.add(join_key(prefix + loc), pydantic_reason(err))

    def check(self) -> None:
        """Raise ConfigError with every problem, if there is any."""
        if self.lines:
            raise ConfigError(self.lines)


def _internal_loc(part: Any) -> bool:
    """Pydantic location parts that are not keys of the file (union members, validators)."""
    return isinstance(part, str) and ("[" in part or part in ("function-after",
                                                             "function-before"))


def positive_int(value: str) -> int:
    """argparse type of a count given on the command line (--ops, --jobs, --trace-events): an
    integer >= 1, else one line naming the value."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value!r}")
    return n
