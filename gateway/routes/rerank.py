"""Rerank: ``POST /api/rerank`` (``{model, query, documents, top_k?}`` -> results with ``score``)
and ``POST /v1/rerank`` (Cohere/Jina: documents as strings or ``{text}``, ``top_n``,
``return_documents``). Both answer best first; ties keep document order. Both take
``truncation_direction``; ``/api/rerank`` also ``raw_scores`` (a cross-encoder's logits instead of
their sigmoid; an embedding model's cosines are the same either way)."""

from __future__ import annotations

import msgspec
import numpy as np
from aiohttp import web

from appliance.config import Config
from gateway import encoding, errors
from gateway.backend import RerankOutcome
from gateway.context import CONTEXT, Context, REQUEST_ID
from gateway.responses import (
    CohereMeta,
    CohereRerankResponse,
    CohereResult,
    CohereTokens,
    RerankResponse,
    RerankResult,
)
from gateway.route_docs import RERANK_HEADERS, RouteDoc, WORK_ERRORS, json_answer
from gateway.routes.answers import AddRoute, respond_served
from gateway.routes.checks import check_inputs, read_json
from gateway.routes.options import direction_of
from gateway.schemas import CohereRerank, Document, Rerank

_decoder = msgspec.json.Decoder(Rerank)
_cohere_decoder = msgspec.json.Decoder(CohereRerank)


def check_query(query: str, config: Config) -> None:
    if not query:
        raise errors.EmptyInput("`query` is empty: nothing to rank against")
    if len(query) > config.max_input_chars:
        raise errors.InputTooLong(f"`query` has {len(query)} characters; the limit is {config.max_input_chars}")


async def score(ctx: Context, request: web.Request, model: str | None, query: str, documents: list[str],
                truncate: bool, direction: str = "right",
                raw_scores: bool = False) -> tuple[str, RerankOutcome]:  # fmt: skip
    """Resolve the model, check the query and documents, admit the documents (the inputs a rate
    limit counts), score: (model name, outcome)."""
    card = ctx.model(model)
    check_query(query, ctx.config)
    check_inputs(documents, ctx.config, field="documents")
    ctx.admit_inputs(request, len(documents))
    return card.name, await ctx.rerank(card.name, query, documents, truncate, raw_scores=raw_scores,
                                       truncation_direction=direction_of(direction))  # fmt: skip


def ranking(scores: np.ndarray, top: int | None) -> tuple[list[int], list[float]]:
    """Indices best first (stable, so ties keep document order), cut to ``top``, and their
    scores as floats that print like the float32 they are."""
    order = np.argsort(-scores, kind="stable")[:top]
    return order.tolist(), encoding.float32_list(scores[order])


async def rerank(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    ctx.admit(request)
    body = await read_json(request, _decoder, ctx.config.max_inputs)
    model, outcome = await score(ctx, request, body.model, body.query, body.documents, body.truncate,
                                 body.truncation_direction, body.raw_scores)  # fmt: skip
    order, scores = ranking(outcome.scores, body.top_k)
    results = [RerankResult(index=i, score=s, document=body.documents[i]) for i, s in zip(order, scores)]
    return respond_served(request, encoding.encode(RerankResponse(model, results)), outcome)


async def rerank_cohere(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    ctx.admit(request)
    body = await read_json(request, _cohere_decoder, ctx.config.max_inputs)
    texts = [d if isinstance(d, str) else d.text for d in body.documents]
    _, outcome = await score(ctx, request, body.model, body.query, texts, body.truncate, body.truncation_direction)
    order, scores = ranking(outcome.scores, body.top_n)
    results = [
        CohereResult(index=i, relevance_score=s, document=Document(texts[i]) if body.return_documents else None)
        for i, s in zip(order, scores)
    ]
    meta = CohereMeta(tokens=CohereTokens(input_tokens=sum(outcome.tokens)))
    answer = CohereRerankResponse(id=request[REQUEST_ID], results=results, meta=meta)
    return respond_served(request, encoding.encode(answer), outcome)


def register(add: AddRoute) -> None:
    add("POST", "/api/rerank", rerank, RouteDoc(
        "Score documents against a query, best first", "rerank", body=Rerank,
        example={"query": "capital of France", "documents": ["Paris is in France", "Bananas are yellow"]},
        content=json_answer(RerankResponse), headers=RERANK_HEADERS, errors=WORK_ERRORS,
        description="Scores are cosines for an embedding model and sigmoid probabilities for a cross-encoder "
                    "(`raw_scores: true`: its logits). `truncation_direction` (`right`/`left`) says which end a "
                    "too-long document loses."))
    add("POST", "/v1/rerank", rerank_cohere, RouteDoc(
        "Score documents against a query (Cohere / Jina)", "rerank", body=CohereRerank,
        example={"query": "capital of France", "documents": ["Paris is in France", {"text": "Bananas are yellow"}],
                 "top_n": 1, "return_documents": True},
        content=json_answer(CohereRerankResponse), headers=RERANK_HEADERS, errors=WORK_ERRORS,
        description="`truncation_direction` (`right`/`left`) says which end a too-long document loses."))
