"""workers/runtimes/chunking.py: length-homogeneous passes, exact cut points, results in input order."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.config import ModelConfig
from workers.runtimes import l2_normalize, load_runtime
from workers.runtimes.base import Tokenized
from workers.runtimes.chunking import MAX_OVERHEAD_TOKENS, forward_by_length, forward_in_chunks, plan_chunks


def cost(lengths: Sequence[int], chunks: list[list[int]], overhead: float) -> float:
    return sum(overhead + len(c) * max(lengths[i] for i in c) for c in chunks)


def best_cost_by_brute_force(lengths: list[int], overhead: float) -> float:
    ordered = sorted(lengths)
    n = len(ordered)
    best = float("inf")
    for cuts in itertools.product([False, True], repeat=n - 1):  # every split of the sorted list
        chunks, start = [], 0
        for i, cut in enumerate(cuts, 1):
            if cut:
                chunks.append(list(range(start, i)))
                start = i
        chunks.append(list(range(start, n)))
        best = min(best, cost(ordered, chunks, overhead))
    return best


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 200), min_size=1, max_size=9), st.floats(0, 500))
def test_the_plan_is_a_partition_with_the_least_cost(lengths: list[int], overhead: float) -> None:
    chunks = plan_chunks(lengths, overhead)
    assert sorted(i for c in chunks for i in c) == list(range(len(lengths)))
    assert cost(lengths, chunks, overhead) == pytest.approx(best_cost_by_brute_force(lengths, overhead))


def test_free_padding_keeps_one_pass_and_costly_padding_splits() -> None:
    lengths = [5, 80, 6, 78, 7]
    assert len(plan_chunks(lengths, MAX_OVERHEAD_TOKENS)) == 1
    assert sorted(map(sorted, plan_chunks(lengths, 10))) == [[0, 2, 4], [1, 3]]


def test_chunked_results_come_back_in_input_order() -> None:
    calls: list[list[int]] = []

    def run(batch: Sequence[Tokenized]) -> np.ndarray:
        calls.append([t.length for t in batch])
        return np.array([[t.ids[0], t.length] for t in batch], dtype=np.float32)

    batch = [Tokenized([i], None, length) for i, length in enumerate([70, 4, 66, 5, 3, 72])]
    out = forward_in_chunks(run, batch, overhead_tokens=8)
    assert len(calls) == 2 and all(max(c) - min(c) < 10 for c in calls)
    assert out[:, 0].tolist() == list(range(6)) and out[:, 1].tolist() == [70, 4, 66, 5, 3, 72]


def test_the_runtime_measures_its_overhead_and_chunking_changes_no_vector(tiny_transformer: Path) -> None:
    # float32: a reduced precision computes short rows apart at float32, which one padded pass does not
    model = ModelConfig(name="tiny", path=str(tiny_transformer), main=True, dtype="float32")
    runtime = load_runtime(model, tiny_transformer, "cpu")
    runtime.warmup()
    assert 1 <= runtime.overhead_tokens <= MAX_OVERHEAD_TOKENS
    batch = runtime.tokenize([("word " * n).strip() for n in (2, 90, 3, 85, 4, 60)], truncate=True)
    runtime.overhead_tokens = 1.0  # force several passes
    np.testing.assert_allclose(l2_normalize(runtime.forward(batch)), l2_normalize(runtime.forward_padded(batch)),
                               atol=1e-5)  # fmt: skip


def test_short_and_long_rows_never_share_a_pass_and_come_back_in_order() -> None:
    calls: list[tuple[str, list[int]]] = []

    def runner(name: str) -> Callable[[Sequence[Tokenized]], np.ndarray]:
        def run(batch: Sequence[Tokenized]) -> np.ndarray:
            calls.append((name, [t.length for t in batch]))
            return np.array([[t.ids[0], t.length] for t in batch], dtype=np.float32)

        return run

    batch = [Tokenized([i], None, length) for i, length in enumerate([70, 4, 12, 13, 3])]
    out = forward_by_length(runner("short"), runner("long"), batch, max_short_tokens=12)
    assert calls == [("short", [4, 12, 3]), ("long", [70, 13])]
    assert out[:, 0].tolist() == list(range(5)) and out[:, 1].tolist() == [70, 4, 12, 13, 3]
    calls.clear()
    forward_by_length(runner("short"), runner("long"), batch[1:3], max_short_tokens=12)
    forward_by_length(runner("short"), runner("long"), batch[:1], max_short_tokens=12)
    assert calls == [("short", [4, 12]), ("long", [70])]  # one side only: one call, no merge
