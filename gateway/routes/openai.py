"""OpenAI's ``POST /v1/embeddings``: text, texts, one token-id list or token-id lists in;
``float`` (JSON numbers) or ``base64`` (raw little-endian float32, the SDK's default) out, or, as an
extension, ``int8``/``uint8``/``binary``/``ubinary`` integer arrays (``gateway/quantize.py``)."""

from __future__ import annotations

from typing import cast

import msgspec
from aiohttp import web

from gateway import encoding, errors
from appliance.protocol import Input
from gateway.context import CONTEXT
from gateway.responses import OpenAIEmbedResponse, OpenAIEmbedding, OpenAIUsage
from gateway.route_docs import EMBED_HEADERS, RouteDoc, WORK_ERRORS, json_answer
from gateway.routes.answers import AddRoute, respond_served
from gateway.routes.checks import check_dimensions, check_inputs, read_json
from gateway.routes.options import OPTIONS_DOC, documented, embed_choice
from gateway.schemas import OpenAIEmbed

_decoder = msgspec.json.Decoder(OpenAIEmbed)


def inputs_of(raw: str | list[str | int | list[int]]) -> list[Input]:
    """OpenAI's four input forms as a list of items. The schema lets the element types mix
    (msgspec allows one array type per union), so a mix is refused here."""
    if isinstance(raw, str):
        return [raw]
    kinds = {type(item) for item in raw}
    if len(kinds) > 1:
        raise errors.InvalidField(
            "`input` must be a string, strings, one token-id list or token-id lists, not a mix - at `$.input`"
        )
    if kinds == {int}:
        return [cast(list[int], raw)]  # one token-id list is one input
    return cast(list[Input], raw)


async def embeddings(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    ctx.admit(request)
    body = await read_json(request, _decoder, ctx.config.max_inputs)
    card = ctx.embedding_model(body.model)
    items = inputs_of(body.input)
    check_inputs(items, ctx.config)
    dims = check_dimensions(body.dimensions, card)
    choice = embed_choice(card, body, ctx.config.max_input_chars)
    items = choice.inputs(items)
    ctx.admit_inputs(request, len(items))
    as_json = body.encoding_format == "float"  # the cached JSON rows serve float answers only
    outcome = await ctx.embed(card.name, items, body.truncate, json=as_json, normalize=choice.normalize,
                              truncation_direction=choice.direction)  # fmt: skip
    vectors = encoding.shorten(outcome.vectors, dims, choice.normalized)
    encoded = encoding.full_width(outcome.json_rows, outcome.vectors, dims)
    rows = encoding.rows_as(body.encoding_format, vectors, encoded)
    tokens = sum(outcome.tokens)
    answer = OpenAIEmbedResponse(
        data=[OpenAIEmbedding(index=i, embedding=row) for i, row in enumerate(rows)],
        model=card.name,
        usage=OpenAIUsage(prompt_tokens=tokens, total_tokens=tokens),
    )
    return respond_served(request, encoding.encode(answer), outcome, len(items))


def register(add: AddRoute) -> None:
    add("POST", "/v1/embeddings", embeddings, RouteDoc(
        "Embed texts or token-id lists (OpenAI)", "embeddings", body=documented(OpenAIEmbed),
        example={"input": ["hello world", "a second text"]}, content=json_answer(OpenAIEmbedResponse),
        headers=EMBED_HEADERS, errors=WORK_ERRORS,
        description="`input` is a text, texts, one token-id list or token-id lists (not a mix). "
                    "`encoding_format: base64` answers little-endian float32 bytes as base64; `int8`, "
                    "`uint8`, `binary` and `ubinary` (an extension) answer integer arrays, quantised with a "
                    "fixed scale after `dimensions` (binary: 8 dimensions a byte). " + OPTIONS_DOC))
