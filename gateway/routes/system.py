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
from gateway.backend import CacheReport, ModelCard
from gateway.context import CONTEXT
from gateway.jobs.model import JobQueue
from gateway.responses import OllamaDetails, OllamaModel, OllamaTags, OpenAIModel, OpenAIModelList, Status
from gateway.route_docs import RouteDoc, json_answer
from gateway.routes.answers import AddRoute, respond
from gateway.stats import SystemStats


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
        normalize=card.normalize,
        prompts=card.prompts,
        default_prompt_name=card.default_prompt_name,
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
    add("GET", "/queue-status", queue_status, RouteDoc(
        "What is waiting where: per worker, interactive, jobs", "operations", content=json_answer(QueueStatus),
        errors=(503,)))  # 503: the job store is not open yet
    add("GET", "/health", health, RouteDoc(
        "Liveness: 200 while the process can answer, draining or not", "operations", content=json_answer(Status)))
    add("GET", "/ready", ready, RouteDoc(
        "Readiness: 200 once every model is loaded, 503 while loading or draining", "operations",
        content=json_answer(Status), errors=(503,)))
    add("GET", "/v1/models", models, RouteDoc(
        "The models served here (OpenAI's list shape)", "models", content=json_answer(OpenAIModelList)))
    add("GET", "/api/tags", tags, RouteDoc(
        "The models served here (Ollama's list shape)", "models", content=json_answer(OllamaTags)))
    add("GET", "/cache-stats", cache_stats, RouteDoc(
        "The result cache, overall and per model", "operations", content=json_answer(CacheReport)))
    add("GET", "/stats", stats, RouteDoc(
        "Workers, cache, admission and traffic: the operator's view", "operations",
        content=json_answer(SystemStats)))
