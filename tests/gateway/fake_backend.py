"""The HTTP contract tests' stand-ins: a deterministic in-test ``Backend`` (``FakeBackend``), the
config and model names they share, and ``ServerThread``, a real aiohttp server on a free port run
on its own event loop in a thread so that synchronous clients (the ``openai`` and ``ollama`` SDKs,
``http.client``) can talk to it from the test's thread. The fixtures over them are in this
folder's ``conftest.py``; tests import these by this module's own name (two conftest modules
cannot both be imported as ``conftest``)."""


from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import threading
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from aiohttp import web

from appliance.config import Config
from appliance.protocol import INTERACTIVE, Input
from gateway.backend import CacheReport, EmbedOutcome, ModelCard, RerankOutcome, Timings, WorkerCard
from harness import Reply

MAIN, STATIC, CROSS = "mini", "static", "cross"
DIMS = {MAIN: 8, STATIC: 6, CROSS: 0}

TEST_CONFIG = Config(
    max_body_bytes=64 * 1024,
    max_inputs=16,
    max_input_chars=1000,
    request_timeout=2.0,
)


def vector_for(model: str, item: Input) -> np.ndarray:
    """A unit float32 vector seeded by a hash of (model, input): same input, same vector."""
    seed = hashlib.sha256(f"{model}\0{item!r}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(seed[:8], "little"))
    v = rng.standard_normal(DIMS[model] or 8).astype(np.float32)
    return (v / np.linalg.norm(v)).astype(np.float32)


@dataclass
class Call:
    kind: str  # embed | rerank
    model: str
    inputs: list[Any]
    truncate: bool
    remaining_s: float  # deadline minus loop.time() when the call arrived
    use_cache: bool = True


@dataclass
class FakeBackend:
    """Implements ``gateway.backend.Backend``. Tests flip its attributes to steer it."""

    ready: bool = True
    draining: bool = False
    fail: BaseException | None = None  # raised by the next embed/rerank calls
    delay_s: float = 0.0
    cache_hits: int = 0  # reported as served from the cache (capped at the input count)
    served_by: str = "0"  # the outcome's `workers`
    calls: list[Call] = field(default_factory=list)
    priorities: list[int] = field(default_factory=list)  # each embed/rerank call's, in order
    options: list[dict[str, Any]] = field(default_factory=list)  # each call's request options (normalize, ...)

    def is_ready(self) -> bool:
        return self.ready

    def is_draining(self) -> bool:
        return self.draining

    def models(self) -> list[ModelCard]:
        return [
            ModelCard(name=MAIN, kind="transformer", dim=DIMS[MAIN], max_length=128, main=True, workers=[0, 1]),
            ModelCard(name=STATIC, kind="static", dim=DIMS[STATIC], max_length=512, main=False, workers=[0]),
            ModelCard(name=CROSS, kind="cross_encoder", dim=0, max_length=256, main=False, workers=[0]),
        ]

    def workers(self) -> list[WorkerCard]:
        return [WorkerCard(index=0, up=True, models=[CROSS, MAIN, STATIC], outstanding_inputs=0, outstanding_tokens=0),
                WorkerCard(index=1, up=True, models=[MAIN], outstanding_inputs=0, outstanding_tokens=0)]  # fmt: skip

    def cache_stats(self) -> CacheReport:
        return CacheReport()

    def lookup(self, model: str, inputs: Sequence[Input], *, truncate: bool, use_cache: bool = True,
               json: bool = False, **options: Any) -> EmbedOutcome | None:  # fmt: skip
        return None  # no cache here: every request takes the awaited path the tests steer

    def vectors_for(self, model: str, inputs: Sequence[Input]) -> np.ndarray:
        return np.stack([vector_for(model, item) for item in inputs])

    async def _arrive(self, kind: str, model: str, inputs: list[Any], truncate: bool, deadline: float,
                      use_cache: bool = True) -> None:  # fmt: skip
        remaining = deadline - asyncio.get_running_loop().time()
        self.calls.append(Call(kind, model, inputs, truncate, remaining, use_cache))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail

    async def embed(self, model: str, inputs: Sequence[Input], *, truncate: bool, deadline: float,
                    use_cache: bool = True, priority: int = INTERACTIVE, **options: Any) -> EmbedOutcome:  # fmt: skip
        self.priorities.append(priority)
        self.options.append(options)
        await self._arrive("embed", model, list(inputs), truncate, deadline, use_cache)
        hits = min(self.cache_hits, len(inputs))
        return EmbedOutcome(
            vectors=self.vectors_for(model, inputs),
            tokens=[len(item) + 2 for item in inputs],
            workers="" if hits == len(inputs) else self.served_by,
            timings=Timings(queue_us=1500, tokenize_us=250, compute_us=4000),
            cache_hits=hits,
        )

    async def rerank(self, model: str, query: str, documents: Sequence[str], *, truncate: bool, deadline: float,
                     priority: int = INTERACTIVE, **options: Any) -> RerankOutcome:  # fmt: skip
        self.priorities.append(priority)
        self.options.append(options)
        await self._arrive("rerank", model, [query, *documents], truncate, deadline)
        q = vector_for(model, query)
        scores = np.array([float(q @ vector_for(model, d)) for d in documents], dtype=np.float32)
        return RerankOutcome(
            scores=scores,
            tokens=[len(query) + len(d) + 3 for d in documents],
            workers=self.served_by,
            timings=Timings(queue_us=10, tokenize_us=20, compute_us=30),
        )


class ServerThread:
    """An aiohttp server for ``app`` on 127.0.0.1:<free port>, served from a thread's own loop."""

    def __init__(self, app: web.Application) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-gateway", daemon=True)
        self.runner = web.AppRunner(app)
        self.port = 0

    def start(self) -> ServerThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=10)
        return self

    async def _start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        chunks: Sequence[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """``body`` is sent as JSON, ``raw`` as given bytes, ``chunks`` chunked (no Content-Length)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        try:
            if chunks is not None:
                conn.request(method, path, body=iter(chunks), headers=hdrs, encode_chunked=True)
            else:
                payload = raw if raw is not None else (None if body is None else json.dumps(body).encode())
                conn.request(method, path, body=payload, headers=hdrs)
            response = conn.getresponse()
            return Reply(response.status, response.headers, response.read())
        finally:
            conn.close()

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Reply:
        return self.request("POST", path, body, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)
