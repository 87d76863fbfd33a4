"""``workers/histogram.py``: batches counted by bucket, sent as Prometheus-style cumulative counts."""

from __future__ import annotations

import random
from bisect import bisect_left

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.protocol import BATCH_SIZE_BOUNDS, BATCH_TOKEN_BOUNDS
from workers.histogram import Histogram


def test_a_value_on_a_bound_counts_under_that_bound_and_every_larger_one() -> None:
    h = Histogram(BATCH_SIZE_BOUNDS)  # 1, 2, 4, 8, 16, 32, 64, 128, 256, +Inf
    for size in (1, 2, 3, 4, 256, 257, 1000):
        h.observe(size)
    assert h.cumulative() == [1, 2, 4, 4, 4, 4, 4, 4, 5, 7]


def test_nothing_observed_is_all_zeros_one_slot_longer_than_the_bounds() -> None:
    assert Histogram(BATCH_TOKEN_BOUNDS).cumulative() == [0] * (len(BATCH_TOKEN_BOUNDS) + 1)


def test_the_last_slot_counts_every_observation_and_counts_never_fall() -> None:
    rng = random.Random(7)
    h = Histogram(BATCH_TOKEN_BOUNDS)
    values = [rng.randint(1, 40_000) for _ in range(5_000)]
    for value in values:
        h.observe(value)
    counts = h.cumulative()
    assert counts[-1] == len(values)
    assert counts == sorted(counts)
    for bound, count in zip(BATCH_TOKEN_BOUNDS, counts):
        assert count == sum(1 for v in values if v <= bound)


@given(st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=200))
def test_cumulative_counts_equal_a_count_per_bound(values: list[int]) -> None:
    h = Histogram(BATCH_SIZE_BOUNDS)
    for value in values:
        h.observe(value)
    expected = [sum(1 for v in values if v <= bound) for bound in BATCH_SIZE_BOUNDS] + [len(values)]
    assert h.cumulative() == expected
    assert h.buckets[bisect_left(BATCH_SIZE_BOUNDS, 3)] == sum(1 for v in values if v in (3, 4))


@pytest.mark.parametrize("bounds", [(1, 1, 2), (4, 2)])
def test_bounds_must_rise_strictly(bounds: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="rise strictly"):
        Histogram(bounds)
