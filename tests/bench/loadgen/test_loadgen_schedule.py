"""bench/loadgen/schedule.py: a seeded Poisson schedule, inside its window, at its rate."""

from __future__ import annotations

import numpy as np
import pytest

from bench.loadgen.schedule import poisson_schedule


def test_the_schedule_is_fixed_by_its_seed() -> None:
    assert poisson_schedule(50, 4, seed=3) == poisson_schedule(50, 4, seed=3)
    assert poisson_schedule(50, 4, seed=3) != poisson_schedule(50, 4, seed=4)


def test_send_times_increase_inside_the_window() -> None:
    offsets = poisson_schedule(200, 3, seed=0)
    assert all(0 < a < b < 3 for a, b in zip(offsets, offsets[1:]))


@pytest.mark.parametrize("rate", [5.0, 80.0, 2000.0])
def test_arrivals_have_the_rate_and_exponential_gaps(rate: float) -> None:
    seconds = 4000 / rate  # about 4000 arrivals whatever the rate
    offsets = np.array(poisson_schedule(rate, seconds, seed=11))
    expected = rate * seconds
    assert abs(len(offsets) - expected) < 5 * np.sqrt(expected)  # Poisson count: sd = sqrt(mean)
    gaps = np.diff(offsets)
    assert gaps.mean() == pytest.approx(1 / rate, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.06)  # exponential: sd = mean
    # memoryless: the share of gaps longer than the mean is e^-1
    assert (gaps > 1 / rate).mean() == pytest.approx(np.exp(-1), abs=0.03)


def test_a_short_window_at_a_high_rate_is_covered_to_its_end() -> None:
    offsets = poisson_schedule(10_000, 0.5, seed=1)
    assert offsets[-1] > 0.49 and abs(len(offsets) - 5000) < 5 * np.sqrt(5000)


@pytest.mark.parametrize("rate, seconds", [(0, 1), (-1, 1), (10, 0)])
def test_a_schedule_needs_a_positive_rate_and_window(rate: float, seconds: float) -> None:
    with pytest.raises(ValueError, match="positive rate"):
        poisson_schedule(rate, seconds, seed=0)
