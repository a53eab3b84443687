"""Log-linear latency histograms (simcore.metrics.LogHistogram): every quantile of known values
within 1 % of the exact order statistic, from 1 ns to 1000 s, and record(value, count)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from simcore.metrics import QUANTILES, LogHistogram, bucket_bounds, bucket_index


def exact_quantile(values: list[int], q: float) -> int:
    """The smallest value with at least ceil(q * n) values at or below it."""
    s = sorted(values)
    return s[max(1, math.ceil(q * len(s) - 1e-9)) - 1]


def test_known_values_every_quantile_within_one_percent() -> None:
    # 1..100,000 ns then a tail of 1 s .. 1000 s: 100,010 values.
    values = list(range(1, 100_001)) + [k * 100_000_000_000 for k in range(1, 11)]
    h = LogHistogram("x")
    for v in values:
        h.record(v)
    s = h.summary()
    assert s["count"] == len(values) and s["max"] == 1_000_000_000_000
    for key, q in QUANTILES:
        exact = exact_quantile(values, q)
        assert abs(s[key] - exact) <= 0.01 * exact, (key, s[key], exact)
    # p50 of the 100,010 values is the 50,005th: 50,005 ns.
    assert abs(s["p50"] - 50_005) <= 500


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=10**12), min_size=1, max_size=400))
def test_random_values_quantiles_within_one_percent(values: list[int]) -> None:
    h = LogHistogram("x")
    for v in values:
        h.record(v)
    assert h.count == len(values) and h.max == max(values) and h.total == sum(values)
    for _key, q in QUANTILES:
        exact = exact_quantile(values, q)
        assert abs(h.quantile(q) - exact) <= 0.01 * exact


def test_record_with_count_equals_repeated_records() -> None:
    a, b = LogHistogram("x"), LogHistogram("x")
    for v, n in ((3, 5), (1_000, 2), (123_456_789, 7), (0, 1)):
        a.record(v, n)
        for _ in range(n):
            b.record(v)
    assert a.buckets == b.buckets and a.total == b.total and a.max == b.max
    assert a.rows() == b.rows() and a.count == 15


def test_buckets_cover_values_with_relative_width_below_one_percent() -> None:
    for v in [*range(0, 5000), *(int(1.37**k) for k in range(20, 90))]:
        lo, hi = bucket_bounds(bucket_index(v))
        assert lo <= v <= hi
        assert hi - lo <= 0.01 * max(lo, 1)
    # 1000 s still has a bucket of its own width class, and rows report its bounds.
    h = LogHistogram("x")
    h.record(1_000_000_000_000)
    (row,) = h.rows()
    assert row["lo_ns"] <= 1_000_000_000_000 <= row["hi_ns"] and row["count"] == 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=10**9)),
                max_size=80))
def test_tallied_values_read_as_recorded(ops):
    """A hot path may count a value in `tally` instead of recording it: every read (buckets,
    total, max, count, quantiles) sees the numbers recording each value gives, whenever the
    read comes, and the tally object a hot path keeps stays the one folded."""
    tallied, recorded = LogHistogram("t"), LogHistogram("r")
    tally = tallied.tally
    for read, v in ops:
        tally[v] += 1
        recorded.record(v)
        if read:
            assert tallied.summary() == recorded.summary()
    assert tallied.tally is tally
    assert (tallied.buckets, tallied.total, tallied.max) == (
        recorded.buckets, recorded.total, recorded.max)
