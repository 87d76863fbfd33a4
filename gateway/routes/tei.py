"""TEI's routes (Hugging Face text-embeddings-inference), so that a client built for TEI can be
pointed at the appliance unchanged: ``POST /embed`` (and ``POST /``, where TEI's own clients such
as ``huggingface_hub``'s ``InferenceClient`` post), ``POST /rerank``, ``POST /tokenize``,
``POST /decode`` and ``GET /info``. ``GET /`` stays the status page; ``/health`` and
``/metrics`` are the appliance's own, which TEI clients read the same way.

Which model: TEI serves one. ``/embed``, ``/tokenize``, ``/decode`` and ``/info`` use the main
model; ``/rerank`` the first cross-encoder served, else the main model (query/document cosine).
An optional ``model`` field (our extension) names another. Shapes, defaults and the error table
are ``gateway/tei.py``; every handler is wrapped by ``speaks_tei``, so errors answer in TEI's
``{error, error_type}`` with TEI's statuses.
"""

from __future__ import annotations

import asyncio
from typing import cast

import msgspec
from aiohttp import web

from appliance.config import Config
from appliance.protocol import Input, TruncationDirection
from gateway import encoding, errors
from gateway.backend import ModelCard
from gateway.context import CONTEXT, Context
from gateway.model_files import read_model_files
from gateway.openapi import package_version
from gateway.prompts import apply_prompt, prompt_for
from gateway.route_docs import EMBED_HEADERS, RERANK_HEADERS, VECTOR, RouteDoc, json_answer
from gateway.routes.answers import AddRoute, Handler, respond, respond_served
from gateway.routes.checks import check_dimensions, check_inputs, read_json
from gateway.routes.rerank import check_query, ranking
from gateway.tei import (
    TEI_STATUSES,
    TeiClassifierModel,
    TeiDecode,
    TeiEmbed,
    TeiEmbeddingModel,
    TeiError,
    TeiInfo,
    TeiModelType,
    TeiRank,
    TeiRerank,
    TeiToken,
    TeiTokenize,
    speaks_tei,
)
from gateway.tokenization import ModelTokenizer, Tokenizers

AUTO_TRUNCATE = False  # TEI's default: an input over the model's max length is refused, not cut
EMBED_ANSWER = {"type": "array", "items": VECTOR}

_embed_decoder = msgspec.json.Decoder(TeiEmbed)
_rerank_decoder = msgspec.json.Decoder(TeiRerank)
_tokenize_decoder = msgspec.json.Decoder(TeiTokenize)
_decode_decoder = msgspec.json.Decoder(TeiDecode)


# ---- embed ----------------------------------------------------------------------------------
def inputs_of(raw: str | list[str | int | list[int]]) -> list[Input]:
    """TEI's input forms as a list of items: a text, a batch of texts and token-id lists, one
    token-id list. A flat list mixing ids with anything else is refused."""
    if isinstance(raw, str):
        return [raw]
    if raw and all(isinstance(item, int) for item in raw):
        return [cast(list[int], raw)]  # one token-id list is one input
    if any(isinstance(item, int) for item in raw):
        raise errors.InvalidField("`inputs` must be a text, a batch of texts and token-id lists, or one token-id "
                                  "list - at `$.inputs`")  # fmt: skip
    return cast(list[Input], raw)


def truncation(truncate: bool | None, direction: str) -> tuple[bool, TruncationDirection]:
    """(truncate, "right" | "left"): TEI's ``truncate`` left out is ``auto_truncate``; TEI spells
    the direction either way."""
    return (AUTO_TRUNCATE if truncate is None else truncate), cast(TruncationDirection, direction.lower())


async def embed(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    ctx.admit(request)
    body = await read_json(request, _embed_decoder, ctx.config.max_inputs)
    card = ctx.embedding_model(body.model)
    items = inputs_of(body.inputs)
    check_inputs(items, ctx.config, field="inputs")
    dims = check_dimensions(body.dimensions, card)
    items = apply_prompt(prompt_for(card, prompt_name=body.prompt_name), items)
    truncate, direction = truncation(body.truncate, body.truncation_direction)
    ctx.admit_inputs(request, len(items))
    outcome = await ctx.embed(card.name, items, truncate, json=True, normalize=body.normalize,
                              truncation_direction=direction)  # fmt: skip
    vectors = encoding.shorten(outcome.vectors, dims, normalized=body.normalize)
    encoded = encoding.full_width(outcome.json_rows, outcome.vectors, dims)
    return respond_served(request, encoding.encode(encoding.matrix_json(vectors, encoded)), outcome, len(items))


# ---- rerank ---------------------------------------------------------------------------------
def reranker(ctx: Context, name: str | None) -> ModelCard:
    """The named model, else the first cross-encoder, else the main model."""
    if name:
        return ctx.model(name)
    return next((c for c in ctx.backend.models() if c.kind == "cross_encoder"), None) or ctx.model(None)


async def rerank(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    ctx.admit(request)
    body = await read_json(request, _rerank_decoder, ctx.config.max_inputs)
    card = reranker(ctx, body.model)
    check_query(body.query, ctx.config)
    check_inputs(body.texts, ctx.config, field="texts")
    truncate, direction = truncation(body.truncate, body.truncation_direction)
    ctx.admit_inputs(request, len(body.texts))
    outcome = await ctx.rerank(card.name, body.query, body.texts, truncate, raw_scores=body.raw_scores,
                               truncation_direction=direction)  # fmt: skip
    order, scores = ranking(outcome.scores, None)
    ranks = [TeiRank(index=i, score=s, text=body.texts[i] if body.return_text else None) for i, s in zip(order, scores)]
    return respond_served(request, encoding.encode(ranks), outcome)


# ---- tokenize, decode -----------------------------------------------------------------------
def tokens_route(tokenizers: Tokenizers) -> Handler:
    async def tokenize(request: web.Request) -> web.Response:
        ctx = request.app[CONTEXT]
        ctx.admit(request)  # gateway CPU, not a worker's: ready and the request rate, no input rate
        body = await read_json(request, _tokenize_decoder, ctx.config.max_inputs)
        card = ctx.model(body.model)
        texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
        check_inputs(texts, ctx.config, field="inputs")
        prompted = cast(list[str], apply_prompt(prompt_for(card, prompt_name=body.prompt_name), texts))
        tokenizer = await model_tokenizer(tokenizers, card, ctx.config)
        # off the event loop: tokenizing is CPU work (``tokenizers`` releases the GIL for a batch)
        tokens = await asyncio.to_thread(tokenizer.tokenize, prompted, add_special_tokens=body.add_special_tokens)
        answer = [[TeiToken(t.id, t.text, t.special, t.start, t.stop) for t in row] for row in tokens]
        return respond(encoding.encode(answer))

    return tokenize


def decode_route(tokenizers: Tokenizers) -> Handler:
    async def decode(request: web.Request) -> web.Response:
        ctx = request.app[CONTEXT]
        ctx.admit(request)  # gateway CPU, not a worker's: ready and the request rate, no input rate
        body = await read_json(request, _decode_decoder, ctx.config.max_inputs)
        card = ctx.model(body.model)
        batches = id_batches(body.ids, ctx.config)
        tokenizer = await model_tokenizer(tokenizers, card, ctx.config)
        unknown = tokenizer.unknown_id(batches)
        if unknown is not None:
            raise errors.InvalidField(f"token id {unknown} is outside {card.name!r}'s vocabulary "
                                      f"(0..{tokenizer.vocab_size - 1}) - at `$.ids`")  # fmt: skip
        texts = await asyncio.to_thread(tokenizer.decode, batches, skip_special_tokens=body.skip_special_tokens)
        return respond(encoding.encode(texts))

    return decode


def id_batches(ids: list[int | list[int]], config: Config) -> list[list[int]]:
    """One token-id list, or a batch of them (not a mix), as a batch."""
    if all(isinstance(i, int) for i in ids):
        batches = [cast(list[int], ids)]
    elif any(isinstance(i, int) for i in ids):
        raise errors.InvalidField("`ids` must be one token-id list or a batch of them, not a mix - at `$.ids`")
    else:
        batches = cast(list[list[int]], ids)
    if not batches or not any(batches):
        raise errors.EmptyInput("`ids` is empty: nothing to decode")
    if len(batches) > config.max_inputs:
        raise errors.TooManyInputs(f"`ids` has {len(batches)} lists; the limit is {config.max_inputs}")
    return batches


async def model_tokenizer(tokenizers: Tokenizers, card: ModelCard, config: Config) -> ModelTokenizer:
    """The model's tokenizer; 422 when its directory has no fast tokenizer to load."""
    try:
        return await tokenizers.of(card, config)
    except FileNotFoundError as exc:
        raise errors.Unsupported(f"model {card.name!r} cannot tokenize here: {exc}") from None


# ---- info -----------------------------------------------------------------------------------
async def info(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    ctx.check_ready()
    card = ctx.model(None)
    return respond(encoding.encode(TeiInfo(
        model_id=card.name,
        model_dtype=card.dtype or "float32",
        model_type=model_type(card, ctx.config),
        max_concurrent_requests=ctx.config.max_connections,
        max_input_length=card.max_length,
        max_batch_tokens=ctx.config.max_batch_tokens,
        max_batch_requests=ctx.config.max_batch_size,
        max_client_batch_size=ctx.config.max_inputs,
        auto_truncate=AUTO_TRUNCATE,
        tokenization_workers=max(1, len(ctx.backend.workers())),  # each worker tokenizes what it computes
        version=package_version(),
    )))  # fmt: skip


def model_type(card: ModelCard, config: Config) -> TeiModelType:
    model = config.model(card.name)
    try:
        files = read_model_files(model, config.state_dir) if model is not None else None
    except (OSError, ValueError):  # no tokenizer.json, unreadable JSON: the model type is still known
        files = None
    if card.kind == "cross_encoder":
        labels = files.labels if files else {"0": "LABEL_0"}
        ids = {label: int(key) for key, label in labels.items() if key.isdigit()}
        return TeiModelType(reranker=TeiClassifierModel(labels, ids))
    return TeiModelType(embedding=TeiEmbeddingModel(files.pooling if files else "mean"))


def register(add: AddRoute) -> None:
    tokenizers = Tokenizers()  # one per app: each model's tokenizer loaded once
    errors_tei = dict(errors=TEI_STATUSES, error_body=TeiError)
    embed_doc = RouteDoc(
        "Embed a text or texts (TEI)", "tei", body=TeiEmbed, example={"inputs": ["hello world"]},
        content={"application/json": EMBED_ANSWER}, headers=EMBED_HEADERS, **errors_tei,
        description="TEI's `/embed`: `[[float]]`, normalised unless `normalize` is false. `truncate` left out is "
                    "off (`auto_truncate` in `/info`): a too long input is a 413.")  # fmt: skip
    add("POST", "/embed", speaks_tei(embed), embed_doc)
    add("POST", "/", speaks_tei(embed), RouteDoc(
        "Embed (TEI's root route, where huggingface_hub's InferenceClient posts)", "tei", body=TeiEmbed,
        example={"inputs": "hello world"}, content={"application/json": EMBED_ANSWER}, headers=EMBED_HEADERS,
        **errors_tei))  # fmt: skip
    add("POST", "/rerank", speaks_tei(rerank), RouteDoc(
        "Score texts against a query, best first (TEI)", "tei", body=TeiRerank,
        example={"query": "capital of France", "texts": ["Paris is in France", "Bananas are yellow"]},
        content=json_answer(list[TeiRank]), headers=RERANK_HEADERS, **errors_tei,
        description="The first cross-encoder served (sigmoid scores, logits with `raw_scores`), else the main "
                    "model (cosine; `raw_scores` changes nothing)."))  # fmt: skip
    add("POST", "/tokenize", speaks_tei(tokens_route(tokenizers)), RouteDoc(
        "Tokens of a text or texts, with the model's own tokenizer (TEI)", "tei", body=TeiTokenize,
        example={"inputs": "hello world"}, content=json_answer(list[list[TeiToken]]), **errors_tei,
        description="The whole text, not cut at the model's max length; `start`/`stop` are UTF-8 byte offsets."))
    add("POST", "/decode", speaks_tei(decode_route(tokenizers)), RouteDoc(
        "Text of token ids (TEI)", "tei", body=TeiDecode, example={"ids": [2, 100, 3]},
        content=json_answer(list[str]), **errors_tei))  # fmt: skip
    add("GET", "/info", speaks_tei(info), RouteDoc(
        "The main model and the limits, in TEI's terms", "tei", content=json_answer(TeiInfo),
        errors=(503,), error_body=TeiError))  # fmt: skip

