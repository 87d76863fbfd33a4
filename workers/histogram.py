"""A fixed-bound histogram a worker counts its batches into, cheap enough for every batch.

The bounds are the Prometheus ``le`` labels (``BATCH_SIZE_BOUNDS``, ``BATCH_TOKEN_BOUNDS`` in
``appliance/protocol.py``). A batch costs one ``bisect_left`` over that short tuple and one
increment: the counts are kept per bucket (``value <= bounds[0]``, then
``bounds[i-1] < value <= bounds[i]``, then the +Inf bucket), and turned into the cumulative
counts that ``Stats`` carries only when a ``Stats`` is sent, about once a second.
"""

from __future__ import annotations

from bisect import bisect_left
from itertools import accumulate
from typing import Sequence


class Histogram:
    """Observations counted by the bucket their value falls in; ``cumulative`` for the wire."""

    __slots__ = ("bounds", "buckets")

    def __init__(self, bounds: Sequence[int]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError(f"histogram bounds must rise strictly, got {list(bounds)}")
        self.bounds = tuple(bounds)
        self.buckets = [0] * (len(self.bounds) + 1)  # the last one is +Inf

    def observe(self, value: int) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (``le`` is <=)
        self.buckets[bisect_left(self.bounds, value)] += 1

    def cumulative(self) -> list[int]:
        """Observations ``<= bounds[i]`` at index i, every observation last (the +Inf bucket)."""
        return list(accumulate(self.buckets))
