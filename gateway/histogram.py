"""The one latency histogram layout the gateway's telemetry uses: fixed, log-spaced bounds.

Bucket ``i`` counts durations ``<= BOUNDS[i]`` and ``> BOUNDS[i - 1]``; the last slot (index
``len(BOUNDS)``) counts everything above ``BOUNDS[-1]``. The bounds run from 10 us to 100 s,
20 per decade (each 12% above the last), rounded to three significant digits so that the
ones ``/metrics`` exports read as plain numbers. Finding a bucket is one ``bisect`` over a
tuple (about 0.1 us); a percentile is interpolated inside its bucket as Prometheus's
``histogram_quantile`` does, so an estimate is off by at most one bucket's width.

Counts are plain lists of ints: adding one is the cheapest thing Python does, and windows
merge them on the rare read.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Iterable, Sequence

PER_DECADE = 20
LOWEST_EXPONENT, HIGHEST_EXPONENT = -5, 2  # 10 us .. 100 s
BOUNDS: tuple[float, ...] = tuple(
    float(f"{10 ** (step / PER_DECADE):.3g}")
    for step in range(LOWEST_EXPONENT * PER_DECADE, HIGHEST_EXPONENT * PER_DECADE + 1)
)
SLOTS = len(BOUNDS) + 1  # the last slot: above BOUNDS[-1]
# /metrics exports every 10th bound (1 and 3.16 per decade): enough to draw a latency heatmap,
# few enough that routes x stages x buckets stays a small number of series.
EXPORT_EVERY = PER_DECADE // 2
EXPORTED: tuple[int, ...] = tuple(range(0, len(BOUNDS), EXPORT_EVERY))


def slot_of(seconds: float) -> int:
    return bisect_left(BOUNDS, seconds)


def empty() -> list[int]:
    return [0] * SLOTS


def merged(histograms: Iterable[Sequence[int]]) -> list[int]:
    total = empty()
    for counts in histograms:
        for i, count in enumerate(counts):
            if count:
                total[i] += count
    return total


def percentile(counts: Sequence[int], q: float) -> float:
    """The ``q`` quantile (0..1) in seconds, linearly interpolated inside its bucket; 0 when empty.
    The overflow slot reports the highest bound: it has no upper edge to interpolate to."""
    total = sum(counts)
    if not total:
        return 0.0
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            if i >= len(BOUNDS):
                return BOUNDS[-1]
            lower = BOUNDS[i - 1] if i else 0.0
            return lower + (BOUNDS[i] - lower) * (rank - seen) / count
        seen += count
    return BOUNDS[-1]


def cumulative_export(counts: Sequence[int]) -> list[tuple[str, float]]:
    """Prometheus buckets: (``le``, cumulative count) at each exported bound, then ``+Inf``."""
    buckets: list[tuple[str, float]] = []
    running = 0
    last = 0
    for index in EXPORTED:
        running += sum(counts[last : index + 1])
        last = index + 1
        buckets.append((repr(BOUNDS[index]), float(running)))
    buckets.append(("+Inf", float(sum(counts))))
    return buckets
