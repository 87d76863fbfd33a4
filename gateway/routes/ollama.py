"""Ollama's ``POST /api/embed``: ``{model, input, truncate, dimensions?}`` -> ``{model, embeddings,
total_duration, load_duration, prompt_eval_count}``, durations in nanoseconds."""

from __future__ import annotations

import time

import msgspec
from aiohttp import web

from gateway import encoding
from gateway.context import CONTEXT
from gateway.responses import OllamaEmbedResponse
from gateway.route_docs import EMBED_HEADERS, RouteDoc, WORK_ERRORS, json_answer
from gateway.routes.answers import AddRoute, respond_served
from gateway.routes.checks import check_dimensions, check_inputs, read_json
from gateway.routes.options import OPTIONS_DOC, documented, embed_choice
from gateway.schemas import OllamaEmbed

_decoder = msgspec.json.Decoder(OllamaEmbed)


async def embed(request: web.Request) -> web.Response:
    started = time.perf_counter_ns()
    ctx = request.app[CONTEXT]
    ctx.admit(request)
    body = await read_json(request, _decoder, ctx.config.max_inputs)
    card = ctx.embedding_model(body.model)
    texts = [body.input] if isinstance(body.input, str) else body.input
    check_inputs(texts, ctx.config)
    dims = check_dimensions(body.dimensions, card)
    choice = embed_choice(card, body, ctx.config.max_input_chars)
    ctx.admit_inputs(request, len(texts))
    outcome = await ctx.embed(card.name, choice.inputs(texts), body.truncate, json=True, normalize=choice.normalize,
                              truncation_direction=choice.direction)  # fmt: skip
    encoded = encoding.full_width(outcome.json_rows, outcome.vectors, dims)
    answer = OllamaEmbedResponse(
        model=card.name,
        embeddings=encoding.matrix_json(encoding.shorten(outcome.vectors, dims, choice.normalized), encoded),
        total_duration=time.perf_counter_ns() - started,
        load_duration=0,
        prompt_eval_count=sum(outcome.tokens),
    )
    return respond_served(request, encoding.encode(answer), outcome, len(texts))


def register(add: AddRoute) -> None:
    add("POST", "/api/embed", embed, RouteDoc(
        "Embed a text or texts (Ollama)", "embeddings", body=documented(OllamaEmbed),
        example={"input": ["hello world"]},
        content=json_answer(OllamaEmbedResponse), headers=EMBED_HEADERS, errors=WORK_ERRORS,
        description="`model` left out means the main model. Durations are nanoseconds. " + OPTIONS_DOC))
