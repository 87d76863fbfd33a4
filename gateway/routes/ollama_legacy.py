"""Ollama's older embedding route, ``POST /api/embeddings``, which clients written before
``/api/embed`` still call (the ``ollama`` library's ``embeddings()``): ``{model, prompt, options?,
keep_alive?}`` -> ``{"embedding": [...]}``, one vector.

As in Ollama, an empty ``prompt`` answers ``{"embedding": []}`` once the model (and the request's
options) are known good (Ollama only loads the model on it): nothing is computed, and no input is
charged to the rate limit. The request options are ``/api/embed``'s: the prompt goes in front of
the text (``gateway/prompts.py``; the model's default prompt when none is chosen), ``normalize``
and ``truncation_direction`` go to the workers with it.
"""

from __future__ import annotations

from typing import cast

import msgspec
from aiohttp import web

from appliance.protocol import TruncationDirection
from gateway import encoding
from gateway.context import CONTEXT
from gateway.prompts import apply_prompt, prompt_for
from gateway.responses import OllamaEmbeddingResponse
from gateway.route_docs import EMBED_HEADERS, RouteDoc, WORK_ERRORS, json_answer
from gateway.routes.answers import AddRoute, respond, respond_served
from gateway.routes.checks import check_inputs, read_json
from gateway.schemas import OllamaEmbeddings

_decoder = msgspec.json.Decoder(OllamaEmbeddings)
EMPTY = encoding.encode(OllamaEmbeddingResponse(embedding=msgspec.Raw(b"[]")))


async def embeddings(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    ctx.admit(request)
    body = await read_json(request, _decoder, ctx.config.max_inputs)
    card = ctx.embedding_model(body.model)
    prefix = prompt_for(card, prompt_name=body.prompt_name, instruction=body.instruction, input_type=body.input_type)
    if not body.prompt:
        return respond(EMPTY)
    check_inputs([body.prompt], ctx.config, field="prompt")
    ctx.admit_inputs(request, 1)
    direction = cast(TruncationDirection, body.truncation_direction.lower())
    outcome = await ctx.embed(card.name, apply_prompt(prefix, [body.prompt]), body.truncate, json=True,
                              normalize=body.normalize, truncation_direction=direction)  # fmt: skip
    (row,) = encoding.rows_json(outcome.vectors, outcome.json_rows)
    return respond_served(request, encoding.encode(OllamaEmbeddingResponse(embedding=row)), outcome, 1)


def register(add: AddRoute) -> None:
    add("POST", "/api/embeddings", embeddings, RouteDoc(
        "Embed one prompt (Ollama's older route)", "embeddings", body=OllamaEmbeddings,
        example={"prompt": "hello world"}, content=json_answer(OllamaEmbeddingResponse), headers=EMBED_HEADERS,
        errors=WORK_ERRORS,
        description="`model` left out means the main model. An empty `prompt` answers an empty embedding, "
                    "as Ollama does. Extensions: `truncate`, at most one of `prompt_name`, `instruction` and "
                    "`input_type`, `normalize`, `truncation_direction`."))
