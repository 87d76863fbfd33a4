"""Liveness, readiness, the model lists and the operator's views: ``/health``, ``/ready``,
``/v1/models`` (OpenAI's list shape) and ``/api/tags`` (Ollama's), both with dimensions, max
length and workers added; ``/cache-stats`` (the result cache, overall and per model) and
``/stats`` (per-worker cards with the workers' own counters, the cache and admission summaries,
traffic windows, history, memory and scaling advice: ``gateway/readings.py``). ``/health`` and
``/ready`` stay open when API keys are configured: probes have none."""

from __future__ import annotations

from datetime import datetime, timezone

import msgspec
from aiohttp import web

from gateway import encoding, readings
from gateway.backend import ModelCard
from gateway.context import CONTEXT
from gateway.jobs.model import JobQueue
from gateway.responses import OllamaDetails, OllamaModel, OllamaTags, OpenAIModel, OpenAIModelList, Status
from gateway.routes.answers import AddRoute, respond


class WorkerQueue(msgspec.Struct):
    index: int
    up: bool
    outstanding_inputs: int
    outstanding_tokens: int


class QueueStatus(msgspec.Struct, kw_only=True):
    """``GET /queue-status``: what is waiting where. ``interactive_inputs`` is the workers'
    outstanding inputs less the job chunks' (job work runs below interactive work)."""

    workers: list[WorkerQueue]
    interactive_inputs: int
    jobs: JobQueue | None  # null when this gateway runs no jobs


_OK = encoding.encode(Status("ok"))
_READY = encoding.encode(Status("ready"))


async def health(request: web.Request) -> web.Response:
    """200 for as long as the process can answer, draining or not: liveness, not readiness."""
    return respond(_OK)


async def ready(request: web.Request) -> web.Response:
    request.app[CONTEXT].check_ready()  # 503 + Retry-After while loading or draining; no key, no rate
    return respond(_READY)


def openai_model(card: ModelCard, created: int) -> OpenAIModel:
    return OpenAIModel(
        id=card.name,
        created=created,
        kind=card.kind,
        dimensions=card.dim,
        max_length=card.max_length,
        main=card.main,
        workers=card.workers,
    )


def ollama_model(card: ModelCard, modified_at: str) -> OllamaModel:
    return OllamaModel(
        name=card.name,
        model=card.name,
        modified_at=modified_at,
        details=OllamaDetails(family=card.kind, families=[card.kind]),
        dimensions=card.dim,
        max_length=card.max_length,
        workers=card.workers,
    )


async def models(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    created = int(ctx.started)
    data = [openai_model(card, created) for card in ctx.backend.models()]
    return respond(encoding.encode(OpenAIModelList(data=data)))


async def tags(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    modified_at = datetime.fromtimestamp(ctx.started, timezone.utc).isoformat()
    return respond(encoding.encode(OllamaTags([ollama_model(card, modified_at) for card in ctx.backend.models()])))


async def cache_stats(request: web.Request) -> web.Response:
    return respond(encoding.encode(request.app[CONTEXT].backend.cache_stats()))


async def stats(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    return respond(encoding.encode(readings.system_stats(ctx, readings.read(ctx))))


async def queue_status(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    workers = [WorkerQueue(w.index, w.up, w.outstanding_inputs, w.outstanding_tokens) for w in ctx.backend.workers()]
    jobs = await ctx.jobs.queue() if ctx.jobs is not None and ctx.jobs.store is not None else None
    outstanding = sum(w.outstanding_inputs for w in workers)
    interactive = max(0, outstanding - (jobs.inputs_in_flight if jobs else 0))
    return respond(encoding.encode(QueueStatus(workers=workers, interactive_inputs=interactive, jobs=jobs)))


def register(add: AddRoute) -> None:
    add("GET", "/queue-status", queue_status)
    add("GET", "/health", health)
    add("GET", "/ready", ready)
    add("GET", "/v1/models", models)
    add("GET", "/api/tags", tags)
    add("GET", "/cache-stats", cache_stats)
    add("GET", "/stats", stats)
