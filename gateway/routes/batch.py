"""``POST /api/embed/batch`` (the original batch API's shape): groups of texts in, the same groups of vectors
out, plus this request's cache statistics (``use_cache: false`` skips the result cache: no read,
no write). All groups go to the backend as ONE call (one round of routing and batching for the
whole request), and are regrouped on the way out."""

from __future__ import annotations

from itertools import chain

import msgspec
from aiohttp import web

from gateway import encoding
from gateway.context import CONTEXT
from gateway.routes.answers import AddRoute, outcome_headers, respond
from gateway.routes.checks import check_inputs, read_json
from gateway.schemas import BatchEmbed, BatchEmbedResponse, CacheStats

_decoder = msgspec.json.Decoder(BatchEmbed)


async def embed_batch(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    ctx.admit(request)
    body = await read_json(request, _decoder)
    card = ctx.embedding_model(body.model)
    texts = list(chain.from_iterable(body.inputs))
    check_inputs(texts, ctx.config, field="inputs")
    ctx.admit_inputs(request, len(texts))
    outcome = await ctx.embed(card.name, texts, body.truncate, use_cache=body.use_cache, json=True)
    hits = outcome.cache_hits
    answer = BatchEmbedResponse(
        model=card.name,
        batches=encoding.groups_json(outcome.vectors, [len(group) for group in body.inputs], outcome.json_rows),
        cache_stats=CacheStats(hits=hits, misses=len(texts) - hits, hit_rate=hits / len(texts)),
    )
    return respond(encoding.encode(answer), headers=outcome_headers(outcome, len(texts)))


def register(add: AddRoute) -> None:
    add("POST", "/api/embed/batch", embed_batch)
