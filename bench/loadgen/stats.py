"""Latency percentiles and the point a load's samples summarize to.

Percentiles interpolate linearly between the two closest ranks (numpy's default, "method 7" of
Hyndman and Fan), so a figure reads the same whether numpy or this module computed it; with few
samples a p99 is then the largest sample's neighbourhood, never a value outside the samples.
"""

from __future__ import annotations

import math
from typing import Sequence

from bench.points import Point

QUANTILES = (50.0, 95.0, 99.0)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, interpolated between closest ranks; 0 when empty."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} is outside 0..100")
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(scenario: str, batch: int, concurrency: int, latencies: Sequence[float], errors: int,
              seconds: float) -> Point:  # fmt: skip
    """A point from the successful requests' latencies (seconds) over a ``seconds`` window."""
    ms = [latency * 1000 for latency in latencies]
    rps = len(latencies) / seconds if seconds > 0 else 0.0
    p50, p95, p99 = (round(percentile(ms, q), 2) for q in QUANTILES)
    return Point(scenario, batch, concurrency, len(latencies), errors, seconds, round(rps, 1),
                 round(rps * batch, 1), p50, p95, p99)  # fmt: skip
