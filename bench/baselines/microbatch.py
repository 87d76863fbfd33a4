"""Design (c): the thread pool plus a fixed-window micro-batcher.

The first request to arrive opens a window of ``window_s`` (10 ms); requests arriving inside it
join its batch until it holds ``max_inputs`` (32) texts; then one forward pass runs for all of
them on the executor, and each request gets its rows back. A request larger than the cap goes
alone. While a batch runs, arrivals wait for the next window. One failed pass fails every
request in it. This is the textbook batcher: a fixed window and count, no token budget, no
length sorting, no shared memory, one model copy.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import AsyncIterator, NamedTuple

import numpy as np
from aiohttp import web

from bench.baselines import api
from bench.baselines.model import embed
from workers.runtimes import Runtime

MAX_INPUTS = 32
WINDOW_S = 0.010


class Waiting(NamedTuple):
    texts: list[str]
    rows: asyncio.Future[np.ndarray]


class MicroBatcher:
    def __init__(self, runtime: Runtime, *, max_inputs: int = MAX_INPUTS, window_s: float = WINDOW_S) -> None:
        self.runtime, self.max_inputs, self.window_s = runtime, max_inputs, window_s
        self.queue: asyncio.Queue[Waiting] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forward")

    async def embed(self, texts: list[str]) -> np.ndarray:
        waiting = Waiting(texts, asyncio.get_running_loop().create_future())
        await self.queue.put(waiting)
        return await waiting.rows

    async def run(self) -> None:
        while True:
            batch = await self.collect()
            await self.forward(batch)

    async def collect(self) -> list[Waiting]:
        """1) wait for a first request; 2) take arrivals until the window closes or the batch is full."""
        batch = [await self.queue.get()]
        size = len(batch[0].texts)
        closes = time.monotonic() + self.window_s
        while size < self.max_inputs and (left := closes - time.monotonic()) > 0:
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), left))
            except TimeoutError:
                break
            size += len(batch[-1].texts)
        return batch

    async def forward(self, batch: list[Waiting]) -> None:
        """One pass for the whole batch; its rows split back in order, or its error to everyone."""
        texts = [text for waiting in batch for text in waiting.texts]
        try:
            rows = await asyncio.get_running_loop().run_in_executor(self.executor, embed, self.runtime, texts)
        except Exception as exc:
            for waiting in batch:
                if not waiting.rows.done():
                    waiting.rows.set_exception(exc)
            return
        start = 0
        for waiting in batch:
            if not waiting.rows.done():  # a client gone meanwhile has cancelled its future
                waiting.rows.set_result(rows[start : start + len(waiting.texts)])
            start += len(waiting.texts)


def application(runtime: Runtime, *, max_inputs: int = MAX_INPUTS, window_s: float = WINDOW_S) -> web.Application:
    batcher = MicroBatcher(runtime, max_inputs=max_inputs, window_s=window_s)

    async def batching(_: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        batcher.executor.shutdown(wait=True, cancel_futures=True)

    app = api.application(runtime.name, batcher.embed)
    app.cleanup_ctx.append(batching)
    return app
