"""The stand-in worker link the router tests drive ``gateway/router.py`` through.

``ScriptedWorkers`` decodes each record as a worker would and answers from the event loop
through the handlers the router subscribed, as ``appliance.link.WorkerLink.dispatch`` does (the
real link is covered by tests/appliance and the integration tests).
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import numpy as np

from appliance.config import Config, ModelConfig
from appliance.protocol import Cancel, Embed, ModelInfo, Ready, RequestCodec, Vectors, f32_bytes
from gateway.router import Router

DIM = 8
RING = 64 << 10  # small rings so a few long texts fill a record


class ScriptedWorkers:
    """Answers every Embed with vectors whose first column is the input's length."""

    def __init__(self, workers: int = 2, answer: bool = True) -> None:
        self.workers = workers
        self.codec = RequestCodec()
        self.encode = self.codec.encode
        self.records: list[tuple[int, Embed]] = []
        self.cancels: list[tuple[int, int]] = []
        self.answer = answer
        self.handlers: dict[type, list[Callable[[int, Any], None]]] = {}

    def subscribe(self, kind: type, handler: Callable[[int, Any], None]) -> None:
        self.handlers.setdefault(kind, []).append(handler)

    def deliver(self, worker: int, message: object) -> None:
        for handler in self.handlers.get(type(message), []):
            handler(worker, message)

    def send_record(self, worker: int, record: bytes) -> bool:
        assert len(record) <= RING // 2, "the router sent a record the ring refuses"
        message = self.codec.decode(record)
        if isinstance(message, Cancel):
            self.cancels.append((worker, message.id))
            return True
        assert isinstance(message, Embed)
        self.records.append((worker, message))
        if self.answer:
            asyncio.get_running_loop().call_soon(self.reply, worker, message)
        return True

    def reply(self, worker: int, message: Embed) -> None:
        vectors = np.zeros((len(message.inputs), DIM), np.float32)
        vectors[:, 0] = [len(text) for text in message.inputs]
        self.deliver(worker, Vectors(message.id, DIM, f32_bytes(vectors), [1] * len(message.inputs)))


def make_router(workers: ScriptedWorkers, **settings: Any) -> Router:
    config = Config(models=[ModelConfig(name="m", path="/nowhere", main=True)], ring_bytes=RING, **settings)
    router = Router(config, workers)
    for i in range(workers.workers):
        router.worker_ready(i, Ready(i, 100 + i, [ModelInfo("m", "transformer", DIM, 512)]))
    return router


def deadline(seconds: float = 5.0) -> float:
    return asyncio.get_running_loop().time() + seconds
