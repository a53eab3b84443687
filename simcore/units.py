"""Units for experiment files: durations in nanoseconds and sizes in bytes.

Durations accept an integer (nanoseconds) or a string with a unit: "40ns", "2us", "2µs", "100ms",
"15s", "1.5ms". Sizes accept an integer (bytes) or "512", "4KiB", "16MiB", "4GiB" (binary, any
case) or the SI "1kB", "1MB", "1GB", "1TB" (decimal, exactly so spelled). "KB", "K", "M", "G",
"T" and other spellings that mean 1024 to some readers and 1000 to others are rejected.
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated

from pydantic import BeforeValidator

_DURATION = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_SIZE_BINARY = {"": 1, "b": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}
"""IEC units, matched in any case."""
_SIZE_SI = {"kB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4}
"""SI units, matched exactly (kB with a small k, as SI spells it)."""
_NUMBER_UNIT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-zµ]*)\s*$")


MAX_DURATION = 2**62
"""Longest duration accepted (about 146 years): simulated time stays a 64-bit integer."""
MAX_SIZE = 2**60
"""Largest size accepted (1 EiB)."""


def parse_duration(value: int | float | str) -> int:
    """Nanoseconds for `value`; raises ValueError naming the accepted units."""
    ns = _duration(value)
    if abs(ns) > MAX_DURATION:
        raise ValueError(f"{_toml(value)} is too long (at most {MAX_DURATION} ns)")
    return ns


def _duration(value: int | float | str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as '2us' or '100ms', got {_toml(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise ValueError(f"a bare number is nanoseconds and must be whole, got {_toml(value)}")
        return int(value)
    if isinstance(value, str):
        m = _NUMBER_UNIT.match(value)
        if m:
            num, unit = m.groups()
            if unit in _DURATION:
                ns = float(num) * _DURATION[unit]
                if not math.isfinite(ns) or ns != int(ns):
                    raise ValueError(f"{_toml(value)} is not a whole number of nanoseconds")
                return int(ns)
            if unit == "" and num.isdigit():
                return int(num)
            raise ValueError(f"unknown time unit {unit!r} in {_toml(value)} (use ns, us, ms or s)")
    raise ValueError(f"expected a duration such as '2us' or '100ms', got {_toml(value)}")


def parse_size(value: int | str) -> int:
    """Bytes for `value`; raises ValueError naming the accepted units."""
    size = _size(value)
    if abs(size) > MAX_SIZE:
        raise ValueError(f"{_toml(value)} is too large (at most {MAX_SIZE} bytes)")
    return size


def _size(value: int | str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 512 or '4KiB', got {_toml(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = _NUMBER_UNIT.match(value)
        if m:
            num, unit = m.groups()
            mult = _SIZE_SI.get(unit) or _SIZE_BINARY.get(unit.lower())
            if mult is None:
                raise ValueError(_size_unit_problem(unit, value))
            size = float(num) * mult
            if not math.isfinite(size) or size != int(size):
                raise ValueError(f"{_toml(value)} is not a whole number of bytes")
            return int(size)
    raise ValueError(f"expected a size such as 512 or '4KiB', got {_toml(value)}")


def _toml(value: object) -> str:
    """A value as an experiment file spells it (true, 2.5, "4 KB"), shortened."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _size_unit_problem(unit: str, value: str) -> str:
    """Why `unit` is not accepted: ambiguous prefixes name both readings."""
    prefix = unit[:1].upper()
    if prefix and prefix in "KMGT" and unit.lower() in (prefix.lower(), prefix.lower() + "b"):
        names = {"K": ("KiB", "1024", "kB", "1000"), "M": ("MiB", "1024^2", "MB", "1000^2"),
                 "G": ("GiB", "1024^3", "GB", "1000^3"), "T": ("TiB", "1024^4", "TB", "1000^4")}
        iec, n_iec, si_name, n_si = names[prefix]
        return f"{unit} is ambiguous: use {iec} ({n_iec}) or {si_name} ({n_si})"
    return f"unknown size unit {unit!r} in {_toml(value)} (use B, KiB, MiB, GiB, TiB or kB, MB, GB)"


def plural(n: int, word: str) -> str:
    """`1 CPU`, `4 CPUs`, `0 points` (English plural by adding s)."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def format_duration(ns: int | float) -> str:
    """Short human form: 950ns, 12.5us, 100ms, 15s."""
    for unit, mult in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if abs(ns) >= mult:
            return f"{ns / mult:.4g}{unit}"
    return f"{ns:.0f}ns"


def format_size(nbytes: int | float) -> str:
    """Short human form with binary prefixes: 512B, 4KiB, 1.5MiB."""
    for unit, mult in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(nbytes) >= mult:
            return f"{nbytes / mult:.4g}{unit}"
    return f"{nbytes:.0f}B"


Duration = Annotated[int, BeforeValidator(parse_duration)]
"""Pydantic field type: a duration in ns, parsed from an int or a string with a unit."""
Size = Annotated[int, BeforeValidator(parse_size)]
"""Pydantic field type: a size in bytes, parsed from an int or a string with a unit."""
