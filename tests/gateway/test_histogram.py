"""``gateway/histogram.py``: the log-spaced bounds, bucket choice, percentiles and the buckets
``/metrics`` exports."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from gateway import histogram


def test_bounds_are_log_spaced_round_numbers_from_10_us_to_100_s() -> None:
    bounds = histogram.BOUNDS
    assert (bounds[0], bounds[-1], len(bounds)) == (1e-05, 100.0, 141)
    ratios = [b / a for a, b in zip(bounds, bounds[1:])]
    assert min(ratios) > 1.10 and max(ratios) < 1.14  # 20 per decade: 12% apart
    assert all(len(repr(b).replace("e-0", "").replace(".", "").lstrip("0")) <= 4 for b in bounds)
    assert [bounds[i] for i in histogram.EXPORTED] == [1e-05, 3.16e-05, 0.0001, 0.000316, 0.001, 0.00316, 0.01,
                                                       0.0316, 0.1, 0.316, 1.0, 3.16, 10.0, 31.6, 100.0]  # fmt: skip


def test_a_value_on_a_bound_falls_in_that_bound_s_bucket() -> None:
    assert histogram.slot_of(0.001) == histogram.BOUNDS.index(0.001)
    assert histogram.slot_of(0.0010001) == histogram.BOUNDS.index(0.001) + 1
    assert histogram.slot_of(0.0) == 0
    assert histogram.slot_of(1e9) == len(histogram.BOUNDS)  # the overflow slot


@given(st.floats(min_value=1.001e-5, max_value=100.0), st.sampled_from([0.5, 0.95, 0.99]))
def test_a_percentile_of_one_value_lies_within_its_bucket(value: float, q: float) -> None:
    """Above the lowest bound (the first bucket starts at 0)."""
    counts = histogram.empty()
    counts[histogram.slot_of(value)] += 7
    estimate = histogram.percentile(counts, q)
    assert value / 1.13 <= estimate <= value * 1.13


def test_percentiles_interpolate_across_buckets() -> None:
    counts = histogram.empty()
    low, high = histogram.BOUNDS.index(0.001), histogram.BOUNDS.index(0.1)
    counts[low] = 90  # 90 requests in (0.000891, 0.001]
    counts[high] = 10  # 10 requests in (0.0891, 0.1]
    lower = histogram.BOUNDS[low - 1]
    assert histogram.percentile(counts, 0.5) == pytest.approx(lower + (0.001 - lower) * 50 / 90)
    assert histogram.percentile(counts, 0.9) == pytest.approx(0.001)
    assert histogram.percentile(counts, 0.99) == pytest.approx(0.0891 + (0.1 - 0.0891) * 9 / 10)
    assert histogram.percentile(histogram.empty(), 0.99) == 0.0


def test_the_overflow_slot_reports_the_highest_bound() -> None:
    counts = histogram.empty()
    counts[-1] = 3
    assert histogram.percentile(counts, 0.5) == 100.0


def test_exported_buckets_are_cumulative_at_every_tenth_bound() -> None:
    counts = histogram.empty()
    for value in (5e-6, 0.002, 0.002, 0.5, 1000.0):
        counts[histogram.slot_of(value)] += 1
    buckets = dict(histogram.cumulative_export(counts))
    assert buckets["1e-05"] == 1 and buckets["0.001"] == 1 and buckets["0.00316"] == 3
    assert buckets["0.316"] == 3 and buckets["1.0"] == 4 and buckets["100.0"] == 4 and buckets["+Inf"] == 5
    assert list(buckets)[-1] == "+Inf" and len(buckets) == len(histogram.EXPORTED) + 1


def test_merged_adds_slot_by_slot() -> None:
    a, b = histogram.empty(), histogram.empty()
    a[3], b[3], b[7] = 1, 2, 5
    merged = histogram.merged([a, b])
    assert (merged[3], merged[7], sum(merged)) == (3, 5, 8)
