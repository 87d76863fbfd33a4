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

import msgspec
from aiohttp import web

from gateway import encoding
from gateway.context import CONTEXT
from gateway.responses import OllamaEmbeddingResponse
from gateway.route_docs import EMBED_HEADERS, RouteDoc, WORK_ERRORS, json_answer
from gateway.routes.answers import AddRoute, respond, respond_served
from gateway.routes.checks import check_inputs, read_json
from gateway.routes.options import OPTIONS_DOC, documented, embed_choice
from gateway.schemas import OllamaEmbeddings

_decoder = msgspec.json.Decoder(OllamaEmbeddings)
EMPTY = encoding.encode(OllamaEmbeddingResponse(embedding=msgspec.Raw(b"[]")))


async def embeddings(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    ctx.admit(request)
    body = await read_json(request, _decoder, ctx.config.max_inputs)
    card = ctx.embedding_model(body.model)
    choice = embed_choice(card, body, ctx.config.max_input_chars)  # a bad option is a 422 even for no prompt
    if not body.prompt:
        return respond(EMPTY)
    check_inputs([body.prompt], ctx.config, field="prompt")
    ctx.admit_inputs(request, 1)
    outcome = await ctx.embed(card.name, choice.inputs([body.prompt]), body.truncate, json=True,
                              normalize=choice.normalize, truncation_direction=choice.direction)  # fmt: skip
    (row,) = encoding.rows_json(outcome.vectors, outcome.json_rows)
    return respond_served(request, encoding.encode(OllamaEmbeddingResponse(embedding=row)), outcome, 1)


def register(add: AddRoute) -> None:
    add("POST", "/api/embeddings", embeddings, RouteDoc(
        "Embed one prompt (Ollama's older route)", "embeddings", body=documented(OllamaEmbeddings),
        example={"prompt": "hello world"}, content=json_answer(OllamaEmbeddingResponse), headers=EMBED_HEADERS,
        errors=WORK_ERRORS,
        description="`model` left out means the main model. An empty `prompt` answers an empty embedding, "
                    "as Ollama does. Extensions: `truncate`, and the request options: " + OPTIONS_DOC))
