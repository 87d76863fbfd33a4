"""What every route shares on the way out: the handler types, JSON answers and the headers
that describe them. ``respond_served`` also notes what the answer served on the request
(``gateway.telemetry.SERVED``), which the app's wrapper records once the answer is out."""

from __future__ import annotations

from typing import Awaitable, Callable, Protocol

from aiohttp import web

from gateway.backend import EmbedOutcome, RerankOutcome, Timings
from gateway.route_docs import RouteDoc
from gateway.telemetry import SERVED, Served

JSON = "application/json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AddRoute(Protocol):
    """``add(method, path, handler, doc=None)``: ``doc`` describes the route in ``GET /openapi.json``
    (``gateway/route_docs.py``); a route registered without one is served all the same."""

    def __call__(self, method: str, path: str, handler: Handler, doc: RouteDoc | None = None, /) -> None: ...


def respond(body: bytes, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=body, status=status, content_type=JSON, headers=headers)


def respond_served(request: web.Request, body: bytes, outcome: EmbedOutcome | RerankOutcome,
                   inputs: int | None = None) -> web.Response:  # fmt: skip
    """A work route's 200: ``body`` with ``outcome_headers``, and the outcome noted for the telemetry."""
    request[SERVED] = served(outcome)
    return respond(body, headers=outcome_headers(outcome, inputs))


def served(outcome: EmbedOutcome | RerankOutcome) -> Served:
    """Inputs served (cache hits included; a rerank's documents), and the worker stages when a
    worker was reached (``workers`` is empty when every input was a cache hit)."""
    timings = outcome.timings if outcome.workers else None
    if isinstance(outcome, EmbedOutcome):
        inputs = len(outcome.tokens)
        return Served(inputs, outcome.cache_hits, inputs - outcome.cache_hits, timings)
    return Served(len(outcome.scores), 0, 0, timings)


def outcome_headers(outcome: EmbedOutcome | RerankOutcome, inputs: int | None = None) -> dict[str, str]:
    """``X-Worker-ID`` and ``Server-Timing`` from any outcome; ``X-Cache`` for embeddings."""
    headers = {"X-Worker-ID": outcome.workers or "none", "Server-Timing": server_timing(outcome.timings)}
    if inputs is not None and isinstance(outcome, EmbedOutcome):
        headers["X-Cache"] = cache_state(outcome.cache_hits, inputs)
    return headers


NO_STAGES = Timings()


def server_timing(t: Timings) -> str:
    if t == NO_STAGES:
        return ALL_HITS_TIMING  # every input came from the cache: nothing to format
    return f"queue;dur={t.queue_us / 1000:.3f},tokenize;dur={t.tokenize_us / 1000:.3f},inference;dur={t.compute_us / 1000:.3f}"


ALL_HITS_TIMING = "queue;dur=0.000,tokenize;dur=0.000,inference;dur=0.000"


def cache_state(hits: int, inputs: int) -> str:
    if hits <= 0:
        return "miss"
    return "hit" if hits >= inputs else "partial"
