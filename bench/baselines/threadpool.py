"""Design (b): each request's forward pass in a thread-pool executor, one pass per request.

The loop stays responsive, but concurrent passes are small batches of one request each, and
with ``pool`` threads each asking torch for every core they oversubscribe the CPU: the common
"run_in_executor" fix."""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import AsyncIterator

import numpy as np
from aiohttp import web

from bench.baselines import api
from bench.baselines.model import embed
from workers.runtimes import Runtime


def application(runtime: Runtime, pool: int) -> web.Application:
    executor = ThreadPoolExecutor(max_workers=pool, thread_name_prefix="forward")

    async def offloaded(texts: list[str]) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(executor, functools.partial(embed, runtime, texts))

    async def shutdown(_: web.Application) -> AsyncIterator[None]:
        yield
        executor.shutdown(wait=True, cancel_futures=True)

    app = api.application(runtime.name, offloaded)
    app.cleanup_ctx.append(shutdown)
    return app
