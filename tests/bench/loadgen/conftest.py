"""A real HTTP embedding server for the load generator's tests: every API's route, answering
vectors of a set dimension (or a wrong one, or fewer than asked), in a thread of its own."""

from __future__ import annotations

import asyncio
import threading
from typing import Callable, Iterator

import pytest
from aiohttp import web

STARTUP_S = 10.0


def fake_app(dim: int, *, short_by: int = 0, bad_dim_every: int = 0) -> web.Application:
    """Answers ``len(input) - short_by`` vectors of ``dim`` (``dim + 1`` every ``bad_dim_every``-th request)."""
    served = 0

    def rows(texts: object) -> list[list[float]]:
        nonlocal served
        served += 1
        count = (len(texts) if isinstance(texts, list) else 1) - short_by
        width = dim + 1 if bad_dim_every and served % bad_dim_every == 0 else dim
        return [[0.5] * width for _ in range(count)]

    async def ollama(request: web.Request) -> web.Response:
        return web.json_response({"embeddings": rows((await request.json())["input"])})

    async def openai(request: web.Request) -> web.Response:
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(rows((await request.json())["input"]))]
        return web.json_response({"object": "list", "data": data})

    async def tei(request: web.Request) -> web.Response:
        return web.json_response(rows((await request.json())["inputs"]))

    app = web.Application()
    app.router.add_post("/api/embed", ollama)
    app.router.add_post("/v1/embeddings", openai)
    app.router.add_post("/embed", tei)
    return app


@pytest.fixture
def fake_server() -> Iterator[Callable[..., str]]:
    """``fake_server(dim, **faults)`` -> its URL; every server is stopped at teardown."""
    stops: list[Callable[[], None]] = []

    def start(dim: int, **faults: int) -> str:
        loop = asyncio.new_event_loop()
        runner = web.AppRunner(fake_app(dim, **faults))
        ready = threading.Event()
        port: list[int] = []

        async def serve() -> None:
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
            ready.set()

        thread = threading.Thread(target=lambda: (loop.run_until_complete(serve()), loop.run_forever()), daemon=True)
        thread.start()
        assert ready.wait(STARTUP_S), "the fake server did not start"

        def stop() -> None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(STARTUP_S)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(STARTUP_S)

        stops.append(stop)
        return f"http://127.0.0.1:{port[0]}"

    yield start
    for stop in stops:
        stop()
