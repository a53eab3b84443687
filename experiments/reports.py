"""Text reports in the formats users already read: /proc/lock_stat here, and /proc/slabinfo 2.1
from `policies.slabinfo` (re-exported).

Policy-specific reports (/proc/spl/kmem/slab, ::kmastat, SLAB's statistics slabinfo) come from
the policies' own `reports()`.
"""

from __future__ import annotations

from collections.abc import Iterable

from policies.slabinfo import format_slabinfo, slabinfo_row
from simcore.mutex import MutexStat
from simcore.spinlock import LockStat

__all__ = ["format_lock_stat", "format_slabinfo", "merge_lock_stats", "slabinfo_row"]

_LS_COLS = ("con-bounces", "contentions", "waittime-min", "waittime-max", "waittime-total",
            "waittime-avg", "acq-bounces", "acquisitions", "holdtime-min", "holdtime-max",
            "holdtime-total", "holdtime-avg")


def _us(ns: float) -> str:
    """lock_stat prints times in us with two decimals."""
    return f"{ns / 1000:.2f}"


def merge_lock_stats(name: str, stats: Iterable[LockStat]) -> LockStat:
    """One lock class from its instances (lock_stat aggregates by class); mutex classes keep
    their spin and block figures."""
    stats = list(stats)
    mutex = bool(stats) and all(isinstance(s, MutexStat) for s in stats)
    out: LockStat = MutexStat(name) if mutex else LockStat(name)
    first_w = first_h = True
    for s in stats:
        if mutex:
            out.spins += s.spins  # type: ignore[attr-defined]
            out.spin_total += s.spin_total  # type: ignore[attr-defined]
            out.blocks += s.blocks  # type: ignore[attr-defined]
            out.block_total += s.block_total  # type: ignore[attr-defined]
        out.con_bounces += s.con_bounces
        out.contentions += s.contentions
        out.acq_bounces += s.acq_bounces
        out.acquisitions += s.acquisitions
        out.waittime_total += s.waittime_total
        out.holdtime_total += s.holdtime_total
        out.waittime_max = max(out.waittime_max, s.waittime_max)
        out.holdtime_max = max(out.holdtime_max, s.holdtime_max)
        if s.contentions:
            out.waittime_min = s.waittime_min if first_w else min(out.waittime_min, s.waittime_min)
            first_w = False
        if s.acquisitions:
            out.holdtime_min = s.holdtime_min if first_h else min(out.holdtime_min, s.holdtime_min)
            first_h = False
    return out


def format_lock_stat(classes: list[LockStat]) -> str:
    """/proc/lock_stat version 0.4: one row per lock class, most contended first."""
    width = 40 + 15 * len(_LS_COLS)
    lines = ["lock_stat version 0.4", "-" * width,
             f"{'class name':>40}" + "".join(f" {c:>14}" for c in _LS_COLS), "-" * width, ""]
    for s in sorted(classes, key=lambda s: (-s.contentions, -s.acquisitions, s.name)):
        if not s.acquisitions:
            continue
        vals = [s.con_bounces, s.contentions, _us(s.waittime_min), _us(s.waittime_max),
                _us(s.waittime_total), _us(s.waittime_avg), s.acq_bounces, s.acquisitions,
                _us(s.holdtime_min), _us(s.holdtime_max), _us(s.holdtime_total),
                _us(s.holdtime_avg)]
        lines.append(f"{s.name + ':':>41}" + "".join(f" {v:>14}" for v in vals)[1:])
        lines.append("." * width)
    mutexes = [s for s in classes if isinstance(s, MutexStat) and s.acquisitions]
    if mutexes:
        lines += _mutex_section(mutexes)
    return "\n".join(lines) + "\n"


_MX_COLS = ("spin-count", "spin-total", "spin-avg", "block-count", "block-total", "block-avg")


def _mutex_section(classes: list[MutexStat]) -> list[str]:
    """lockstat's "Adaptive mutex spin" and "Adaptive mutex block" figures per mutex class
    (illumos adaptive mutexes and Linux mutexes with optimistic spinning), times in us: the
    contended wait time above split into time spent spinning and time spent asleep."""
    width = 40 + 15 * len(_MX_COLS)
    lines = ["", "mutex spin / block (lockstat -C: Adaptive mutex spin, Adaptive mutex block)",
             "-" * width, f"{'class name':>40}" + "".join(f" {c:>14}" for c in _MX_COLS),
             "-" * width]
    for s in sorted(classes, key=lambda s: (-s.contentions, s.name)):
        vals = [s.spins, _us(s.spin_total), _us(s.spin_total / s.spins if s.spins else 0),
                s.blocks, _us(s.block_total), _us(s.block_total / s.blocks if s.blocks else 0)]
        lines.append(f"{s.name + ':':>41}" + "".join(f" {v:>14}" for v in vals)[1:])
    return lines
