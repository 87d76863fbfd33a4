"""Design (a): the forward pass inline in the handler. While it runs, the event loop is blocked:
no other request is read, parsed or answered, so concurrency buys nothing but queueing."""

from __future__ import annotations

import numpy as np
from aiohttp import web

from bench.baselines import api
from bench.baselines.model import embed
from workers.runtimes import Runtime


def application(runtime: Runtime) -> web.Application:
    async def blocking(texts: list[str]) -> np.ndarray:
        return embed(runtime, texts)  # on the loop's own thread, on purpose

    return api.application(runtime.name, blocking)
