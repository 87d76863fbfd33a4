"""Cohere's v2 rerank, ``POST /v2/rerank``: ``{model, query, documents: [str], top_n?,
max_tokens_per_doc?}`` -> ``{id, results: [{index, relevance_score}], meta: {api_version:
{version: "2"}, billed_units: {search_units}, tokens}}``, best first, ties in document order.

The scoring is ``/v1/rerank``'s (``rerank.score`` and ``rerank.ranking``); only the body and the
answer differ. Documents are always cut at the model's max length, as Cohere always cuts them at
``max_tokens_per_doc``: a larger value (Cohere's default is 4096) changes nothing, a smaller one
is refused with 422 ``invalid_field``, since the workers cut at the model's length only.
A search unit is a query with up to 100 documents, as Cohere bills them.
"""

from __future__ import annotations

import math

import msgspec
from aiohttp import web

from gateway import encoding, errors
from gateway.backend import ModelCard
from gateway.context import CONTEXT, REQUEST_ID
from gateway.responses import (
    CohereApiVersion,
    CohereBilled,
    CohereResult,
    CohereTokens,
    CohereV2Meta,
    CohereV2RerankResponse,
)
from gateway.route_docs import RERANK_HEADERS, RouteDoc, WORK_ERRORS, json_answer
from gateway.routes.answers import AddRoute, respond_served
from gateway.routes.checks import read_json
from gateway.routes.rerank import ranking, score
from gateway.schemas import CohereRerankV2

_decoder = msgspec.json.Decoder(CohereRerankV2)
DOCUMENTS_PER_SEARCH_UNIT = 100


def check_tokens_per_doc(limit: int | None, card: ModelCard) -> None:
    """Cutting below the model's max length would need the workers to cut shorter; they cut at
    the model's length only, so a smaller limit is refused rather than silently ignored."""
    if limit is not None and limit < card.max_length:
        raise errors.InvalidField(
            f"`max_tokens_per_doc` {limit} is below {card.name!r}'s max length {card.max_length}: documents are "
            f"cut at the model's max length only - at `$.max_tokens_per_doc`"
        )


def search_units(documents: int) -> int:
    return max(1, math.ceil(documents / DOCUMENTS_PER_SEARCH_UNIT))


async def rerank_v2(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    ctx.admit(request)
    body = await read_json(request, _decoder, ctx.config.max_inputs)
    check_tokens_per_doc(body.max_tokens_per_doc, ctx.model(body.model))
    _, outcome = await score(ctx, request, body.model, body.query, body.documents, truncate=True)
    order, scores = ranking(outcome.scores, body.top_n)
    meta = CohereV2Meta(api_version=CohereApiVersion(), billed_units=CohereBilled(search_units(len(body.documents))),
                        tokens=CohereTokens(input_tokens=sum(outcome.tokens)))  # fmt: skip
    answer = CohereV2RerankResponse(
        id=request[REQUEST_ID], results=[CohereResult(index=i, relevance_score=s) for i, s in zip(order, scores)],
        meta=meta,
    )  # fmt: skip
    return respond_served(request, encoding.encode(answer), outcome)


def register(add: AddRoute) -> None:
    add("POST", "/v2/rerank", rerank_v2, RouteDoc(
        "Score documents against a query (Cohere v2)", "rerank", body=CohereRerankV2,
        example={"query": "capital of France", "documents": ["Paris is in France", "Bananas are yellow"], "top_n": 1},
        content=json_answer(CohereV2RerankResponse), headers=RERANK_HEADERS, errors=WORK_ERRORS,
        description="Documents are cut at the model's max length; `max_tokens_per_doc` below it is a 422. "
                    "`id` is the request id; a search unit is a query with up to 100 documents."))
