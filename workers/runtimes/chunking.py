"""Split one batch into length-homogeneous forward passes when padding costs more than a pass.

On a CPU an encoder's cost is about ``overhead + per_token * rows * longest_row``: every padded
position is computed. A continuous batch of live traffic mixes 5-token and 80-token inputs, so
padding can double its cost (measured: 2.5x padded/real tokens for MiniLM at 32 concurrent
single-sentence clients). Sorting the batch by length and cutting it where the padding saved
exceeds one more pass's fixed overhead recovers most of that. The cut points are exact (dynamic
programming over the sorted lengths), and the overhead, in padded-token units, is measured on the
device at warm-up, so a GPU, where padding is nearly free, keeps one pass.

``forward_by_length`` cuts a batch by row length before any of that: a runtime serving a reduced
precision computes its shortest rows apart, with float32 activations
(``precision.SHORT_MAX_TOKENS``).
"""

from __future__ import annotations

import time
from typing import Callable, Sequence, TypeAlias

import numpy as np

from workers.runtimes.base import Tokenized

Run: TypeAlias = Callable[[Sequence[Tokenized]], np.ndarray]
MAX_OVERHEAD_TOKENS = 1 << 16  # "padding is free here": never split
DP_WINDOW = 64  # a chunk longer than this many rows never needs a cut inside it to pay off


def plan_chunks(lengths: Sequence[int], overhead_tokens: float) -> list[list[int]]:
    """Indices of ``lengths`` grouped into passes minimising sum(overhead + rows * longest)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    sorted_lengths = [lengths[i] for i in order]
    n = len(order)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = sorted_lengths[j - 1]
        for i in range(max(0, j - DP_WINDOW), j):
            cost = best[i] + overhead_tokens + (j - i) * longest
            if cost < best[j]:
                best[j], cut[j] = cost, i
    chunks: list[list[int]] = []
    j = n
    while j > 0:
        chunks.append(order[cut[j]:j])
        j = cut[j]
    return chunks[::-1]


def forward_in_chunks(run: Run, batch: Sequence[Tokenized], overhead_tokens: float) -> np.ndarray:
    """``run(batch)``, as several length-sorted passes when that computes fewer padded tokens."""
    if len(batch) < 2 or overhead_tokens >= MAX_OVERHEAD_TOKENS:
        return run(batch)
    chunks = plan_chunks([item.length for item in batch], overhead_tokens)
    if len(chunks) == 1:
        return run(batch)
    return merged(len(batch), chunks, [run([batch[i] for i in chunk]) for chunk in chunks])


def forward_by_length(short: Run, long: Run, batch: Sequence[Tokenized], max_short_tokens: int) -> np.ndarray:
    """``short`` over the rows of at most ``max_short_tokens`` tokens, ``long`` over the rest,
    answered in ``batch``'s order. A short row never shares a pass with a long one."""
    shorts = [i for i, item in enumerate(batch) if item.length <= max_short_tokens]
    if not shorts or len(shorts) == len(batch):
        return (short if shorts else long)(batch)
    longs = [i for i, item in enumerate(batch) if item.length > max_short_tokens]
    parts = [short([batch[i] for i in shorts]), long([batch[i] for i in longs])]
    return merged(len(batch), [shorts, longs], parts)


def merged(rows: int, groups: Sequence[Sequence[int]], parts: Sequence[np.ndarray]) -> np.ndarray:
    """The answers of ``parts`` (one per group of row indices) as one array of ``rows`` rows."""
    out = np.empty((rows, *parts[0].shape[1:]), dtype=parts[0].dtype)
    for group, part in zip(groups, parts):
        out[list(group)] = part
    return out


def measure_overhead_tokens(run: Run, item: Callable[[int], Tokenized], repeats: int = 3) -> float:
    """A pass's fixed cost in padded-token units, from the fastest of ``repeats`` timings of a
    1 x 8 and an 8 x 64 batch (cost = overhead + per_token * rows * longest)."""

    def fastest(rows: int, length: int) -> float:
        batch = [item(length)] * rows
        timings = []
        for _ in range(repeats):
            started = time.perf_counter()
            run(batch)
            timings.append(time.perf_counter() - started)
        return min(timings)

    small, large = fastest(1, 8), fastest(8, 64)
    per_token = (large - small) / (8 * 64 - 8)
    if per_token <= 0:
        return float(MAX_OVERHEAD_TOKENS)  # the bigger batch cost nothing more: padding is free
    return float(min(MAX_OVERHEAD_TOKENS, max(1.0, small / per_token - 8)))
