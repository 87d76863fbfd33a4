"""bench/baselines/microbatch.py: the fixed window gathers concurrent requests into one pass of
at most 32 inputs, and each request gets back its own rows, in order."""

from __future__ import annotations

import asyncio
from typing import Sequence

import numpy as np
import pytest

from bench.baselines.microbatch import MicroBatcher
from workers.runtimes.base import Tokenized


class CountingRuntime:
    """Embeds text i as the row [i, i]; records each forward pass's size."""

    name = "counting"
    normalize = False  # the rows come back as they are

    def __init__(self, fail: bool = False) -> None:
        self.passes: list[int] = []
        self.fail = fail

    def tokenize(self, inputs: Sequence[str], *, truncate: bool) -> list[Tokenized]:
        return [Tokenized([int(text)], None, 1) for text in inputs]

    def forward(self, batch: Sequence[Tokenized]) -> np.ndarray:
        if self.fail:
            raise RuntimeError("forward failed")
        self.passes.append(len(batch))
        return np.array([[item.ids[0]] * 2 for item in batch], dtype=np.float32)


async def submit_all(batcher: MicroBatcher, requests: list[list[str]]) -> list[np.ndarray]:
    runner = asyncio.create_task(batcher.run())
    try:
        return await asyncio.wait_for(asyncio.gather(*(batcher.embed(texts) for texts in requests)), 30)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        batcher.executor.shutdown()


def test_concurrent_requests_share_passes_of_at_most_32_inputs() -> None:
    runtime = CountingRuntime()
    requests = [[str(10 * r + k) for k in range(3)] for r in range(40)]  # 120 inputs at once
    rows = asyncio.run(submit_all(MicroBatcher(runtime, window_s=0.5), requests))  # type: ignore[arg-type]
    for texts, got in zip(requests, rows):
        assert got.tolist() == [[float(t)] * 2 for t in texts]
    assert sum(runtime.passes) == 120 and len(runtime.passes) < 40
    assert max(runtime.passes) <= 32 + 2  # the cap is reached by whole requests: at most one over by one request


def test_a_failed_pass_fails_every_request_in_it() -> None:
    with pytest.raises(RuntimeError, match="forward failed"):
        asyncio.run(submit_all(MicroBatcher(CountingRuntime(fail=True)), [["1"], ["2"]]))  # type: ignore[arg-type]
