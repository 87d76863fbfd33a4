"""What the HTTP routes need from the rest of the gateway, as one small interface.

Routes parse and validate, call a ``Backend``, and encode. The real backend is the router over the
workers' shared-memory channels (``gateway/router.py``); the cache and in-flight coalescing wrap it.
Keeping routes behind this seam means the HTTP contract can be tested on its own and the serving
path can change without touching a route.
"""

from __future__ import annotations

from typing import Protocol, Sequence, Union

import msgspec
import numpy as np

Input = Union[str, list[int]]


class Timings(msgspec.Struct, gc=False):
    """Where the time went, in microseconds, for the ``Server-Timing`` header."""

    queue_us: int = 0
    tokenize_us: int = 0
    compute_us: int = 0


class EmbedOutcome(msgspec.Struct, gc=False):
    vectors: np.ndarray  # (n, dim) float32, in input order, normalised as the model says
    tokens: list[int]  # tokens per input (after truncation), for `usage`
    workers: str = ""  # worker ids that served it, "0" or "0,1"; "" when all were cache hits
    timings: Timings = msgspec.field(default_factory=Timings)
    cache_hits: int = 0  # how many of the inputs were served from the result cache


class RerankOutcome(msgspec.Struct, gc=False):
    scores: np.ndarray  # (n,) float32 in document order; higher = more relevant
    tokens: list[int]
    workers: str = ""
    timings: Timings = msgspec.field(default_factory=Timings)


class ModelCard(msgspec.Struct):
    name: str
    kind: str  # transformer | static | cross_encoder
    dim: int  # 0 for a cross-encoder
    max_length: int
    main: bool
    workers: list[int]  # ids of the workers that hold it (and are up)


class Backend(Protocol):
    """Raises ``gateway.errors.ApiError`` subclasses: ModelNotFound, InputTooLong, QueueFull,
    WorkerLost, DeadlineExceeded, NotReady, Draining, Unsupported."""

    def is_ready(self) -> bool: ...

    def is_draining(self) -> bool: ...

    def models(self) -> list[ModelCard]: ...

    async def embed(
        self, model: str, inputs: Sequence[Input], *, truncate: bool, deadline: float
    ) -> EmbedOutcome:
        """``deadline`` is an absolute ``loop.time()``; past it the call raises DeadlineExceeded."""
        ...

    async def rerank(
        self, model: str, query: str, documents: Sequence[str], *, truncate: bool, deadline: float
    ) -> RerankOutcome:
        """Cross-encoder scores for a cross_encoder model, else query/document cosine."""
        ...
