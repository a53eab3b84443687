"""Per-cache figures of a scenario variant's run, summed over its caches: the building blocks
of the facts in `experiments.scenarios` and the per-allocator fact modules."""

from __future__ import annotations

from typing import Any

import pandas as pd


def cache_sum(vr: Any, key: str) -> int:
    """A final per-cache figure of summary.json summed over all caches."""
    return sum(int(c.get(key, 0) or 0) for c in vr.result.summary.get("caches", {}).values())


def cache_total(vr: Any, suffix: str) -> pd.Series:
    """A timeline figure summed over all caches (`cache.<name><suffix>` columns), per sample."""
    tl = vr.timeline
    cols = [c for c in tl.columns if c.startswith("cache.") and c.endswith(suffix)]
    return tl[cols].sum(axis=1)
