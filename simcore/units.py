"""Units for experiment files: durations in nanoseconds and sizes in bytes.

Durations accept an integer (nanoseconds) or a string with a unit: "40ns", "2us", "2µs", "100ms",
"15s", "1.5ms". Sizes accept an integer (bytes) or "512", "4KiB", "16MiB", "4GiB", "1KB".
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator

_DURATION = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_SIZE = {
    "": 1, "b": 1,
    "k": 1024, "kb": 1000, "kib": 1024,
    "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1024**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1024**4, "tb": 1000**4, "tib": 1024**4,
}
_NUMBER_UNIT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-zµ]*)\s*$")


def parse_duration(value: int | float | str) -> int:
    """Nanoseconds for `value`; raises ValueError naming the accepted units."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as '2us' or '100ms', got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value != int(value):
            raise ValueError(f"a bare number is nanoseconds and must be whole, got {value!r}")
        return int(value)
    if isinstance(value, str):
        m = _NUMBER_UNIT.match(value)
        if m:
            num, unit = m.groups()
            if unit in _DURATION:
                ns = float(num) * _DURATION[unit]
                if ns != int(ns):
                    raise ValueError(f"{value!r} is not a whole number of nanoseconds")
                return int(ns)
            if unit == "" and num.isdigit():
                return int(num)
            raise ValueError(f"unknown time unit {unit!r} in {value!r} (use ns, us, ms or s)")
    raise ValueError(f"expected a duration such as '2us' or '100ms', got {value!r}")


def parse_size(value: int | str) -> int:
    """Bytes for `value`; raises ValueError naming the accepted units."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 512 or '4KiB', got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = _NUMBER_UNIT.match(value)
        if m:
            num, unit = m.groups()
            mult = _SIZE.get(unit.lower())
            if mult is None:
                raise ValueError(f"unknown size unit {unit!r} in {value!r} (use B, KiB, MiB, GiB)")
            size = float(num) * mult
            if size != int(size):
                raise ValueError(f"{value!r} is not a whole number of bytes")
            return int(size)
    raise ValueError(f"expected a size such as 512 or '4KiB', got {value!r}")


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
