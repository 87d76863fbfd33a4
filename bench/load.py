"""Load the HTTP scenarios share: a closed-loop client.

``closed_loop`` drives ``/api/embed`` from C concurrent clients, each sending its next request as
soon as the last is answered. (The denominator every served figure is a ratio of, the model's raw
limit, is ``bench.raw.measure_raw``.)
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

import aiohttp

from bench.points import Point, summarize

Texts = Callable[[int], list[str]]  # request number -> the texts it sends


def corpus_texts(corpus: list[str], batch: int) -> Texts:
    """Consecutive corpus sentences: the serving sweep, run with the cache off."""
    return lambda i: [corpus[(i * batch + k) % len(corpus)] for k in range(batch)]


async def closed_loop(url: str, model: str, texts: Texts, concurrency: int, seconds: float, warmup: float,
                      scenario: str = "embed", headers: dict[str, str] | None = None) -> Point:  # fmt: skip
    """``concurrency`` clients, each sending its next request as soon as the last is answered.
    A point counts the requests that FINISH inside the measured window, whenever they were sent:
    at high concurrency a request takes longer than the window (Little's law: 64 clients x 32
    sentences at ~200 sentences/s is ~10 s each), and counting only requests sent and finished
    inside it would report nothing. Clients still waiting when the window closes are stopped."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(10**12))
    batch = len(texts(0))
    start_measure = time.perf_counter() + warmup
    stop_at = start_measure + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while True:
            chunk = texts(next(counter))
            body = {"model": model, "input": chunk[0] if len(chunk) == 1 else chunk}
            sent = time.perf_counter()
            async with session.post(url + "/api/embed", json=body) as response:
                await response.read()
                ok = response.status == 200
            done = time.perf_counter()
            if not start_measure <= done <= stop_at:
                continue  # warm-up
            if ok:
                latencies.append(done - sent)
            else:
                errors += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:
        clients = [asyncio.create_task(client(session)) for _ in range(concurrency)]
        await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
        for task in clients:
            task.cancel()
        for outcome in await asyncio.gather(*clients, return_exceptions=True):
            if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
                raise outcome  # a client error is the bench's bug, not a measurement
    return summarize(scenario, batch, concurrency, latencies, errors, seconds)
