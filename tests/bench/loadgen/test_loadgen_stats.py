"""bench/loadgen/stats.py: percentiles agree with numpy's linear method, and points add up."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.loadgen.stats import percentile, summarize


def test_percentiles_of_known_samples() -> None:
    hundred = [float(v) for v in range(1, 101)]
    assert percentile(hundred, 50) == pytest.approx(50.5)
    assert percentile(hundred, 99) == pytest.approx(99.01)
    assert percentile(hundred, 0) == 1.0 and percentile(hundred, 100) == 100.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # unsorted input
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) == 0.0


def test_a_percentile_outside_0_to_100_is_refused() -> None:
    with pytest.raises(ValueError, match="outside 0..100"):
        percentile([1.0], 101)


@given(st.lists(st.floats(min_value=0, max_value=1e4, allow_nan=False), min_size=1, max_size=300),
       st.floats(min_value=0, max_value=100))  # fmt: skip
def test_percentile_matches_numpy_and_stays_within_the_samples(values: list[float], q: float) -> None:
    found = percentile(values, q)
    assert found == pytest.approx(float(np.percentile(values, q)), rel=1e-9, abs=1e-9)
    assert min(values) <= found <= max(values)


def test_summarize_counts_rates_and_percentiles_in_ms() -> None:
    point = summarize("embed", 4, 8, [0.010, 0.020, 0.030, 0.040], errors=2, seconds=2.0)
    assert (point.requests, point.errors, point.rps, point.sentences_per_s) == (4, 2, 2.0, 8.0)
    assert (point.p50_ms, point.p99_ms) == (25.0, pytest.approx(39.7))
    assert summarize("embed", 1, 1, [], 0, 1.0).p99_ms == 0.0
