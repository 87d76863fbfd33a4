"""``POST /api/embed/batch`` (the original batch API's shape): groups of texts in, the same groups of vectors
out, plus this request's cache statistics (``use_cache: false`` skips the result cache: no read,
no write). All groups go to the backend as ONE call (one round of routing and batching for the
whole request), and are regrouped on the way out.

``on_error`` says what an input that cannot be served does:

- ``"fail"`` (the default, and the original behaviour): the whole request fails with its error
  (and a blank text among others is embedded, as it always was).
- ``"skip"``: it answers as ``{"index": i, "error": {"type", "message"}}`` (``FailedItem``) in its
  place in ``batches``, ``i`` counting over every group in order; the others get their vectors,
  and ``cache_stats`` counts only them. ``Items`` does the work, for this route and the stream.

The request's own limits (``max_inputs``, ``max_input_chars``) and errors about the request
rather than one input (429, 503, 504) fail it in either mode.
"""

from __future__ import annotations

import asyncio
from itertools import chain
from typing import Sequence

import msgspec
import numpy as np
from aiohttp import web

from gateway import encoding, errors
from gateway.backend import EmbedOutcome
from gateway.context import CONTEXT, Context
from gateway.items import blank_error, is_blank, renamed_message, serve_isolating
from gateway.responses import BatchEmbedResponse, CacheStats, FailedItem, ItemError
from gateway.route_docs import EMBED_HEADERS, RouteDoc, WORK_ERRORS, json_answer
from gateway.routes.answers import AddRoute, respond_served
from gateway.routes.checks import check_groups, check_inputs, read_json
from gateway.routes.options import OPTIONS_DOC, EmbedChoice, documented, embed_choice
from gateway.schemas import BatchEmbed

_decoder = msgspec.json.Decoder(BatchEmbed)

NOTHING_SERVED = EmbedOutcome(vectors=np.zeros((0, 0), dtype=np.float32), tokens=[])


class Items:
    """Texts embedded in one call however many fail (``gateway/items.py``): ``embed``
    serves those it can and keeps, per text, why each of the others was not served. ``offset``
    is the place of ``texts[0]`` in the client's request: the failures' messages name that place.
    """

    def __init__(self, texts: Sequence[str], offset: int = 0) -> None:
        self.texts = texts
        self.offset = offset
        self.failures: dict[int, ItemError] = {
            i: item_error(blank_error(offset + i), offset + i) for i, text in enumerate(texts) if is_blank(text)
        }
        self.live = [i for i in range(len(texts)) if i not in self.failures]  # after embed: the served
        self.outcome = NOTHING_SERVED  # the served texts' vectors, in the order of ``live``

    async def embed(self, ctx: Context, model: str, truncate: bool, choice: EmbedChoice, *, use_cache: bool = True,
                    json: bool = False) -> None:  # fmt: skip
        """Serve the live texts with ``choice``'s options (its prompt goes before each; a blank text
        was set aside on what the client sent)."""
        async def call(live: list[int]) -> tuple[EmbedOutcome, dict[int, errors.ApiError]]:
            outcome = await ctx.embed(model, choice.inputs([self.texts[i] for i in live]), truncate,
                                      use_cache=use_cache, json=json, normalize=choice.normalize,
                                      truncation_direction=choice.direction, isolate=True)  # fmt: skip
            return outcome, outcome.refused

        set_aside: dict[int, errors.ApiError] = {}
        deadline = asyncio.get_running_loop().time() + ctx.config.request_timeout
        try:
            self.outcome = await serve_isolating(call, self.live, deadline, set_aside) or NOTHING_SERVED
        finally:
            for index, exc in set_aside.items():
                self.failures[index] = item_error(exc, self.offset + index)

    def fail_rest(self, exc: errors.ApiError) -> None:
        """Every text not yet served fails with ``exc`` (a request error)."""
        for index in self.live:
            self.failures[index] = ItemError(exc.type, exc.message)
        self.live = []

    def served_rows(self) -> list[msgspec.Raw]:
        """The served texts' vectors as JSON arrays, in the order of ``live``."""
        return encoding.rows_json(self.outcome.vectors, self.outcome.json_rows) if self.live else []


async def read_batch(request: web.Request) -> tuple[Context, BatchEmbed, str, list[str], EmbedChoice]:
    """The door of this route and of the stream: admitted, the body read, the model resolved, the
    texts (every group, in order) and the options checked, the texts admitted. (context, body,
    model name, texts as sent, the options)"""
    ctx = request.app[CONTEXT]
    ctx.admit(request)
    body = await read_json(request, _decoder, ctx.config.max_inputs)
    check_groups(body.inputs, ctx.config)
    card = ctx.embedding_model(body.model)
    texts = list(chain.from_iterable(body.inputs))
    check_inputs(texts, ctx.config, field="inputs")
    choice = embed_choice(card, body, ctx.config.max_input_chars)
    ctx.admit_inputs(request, len(texts))
    return ctx, body, card.name, texts, choice


async def embed_batch(request: web.Request) -> web.Response:
    ctx, body, model, texts, choice = await read_batch(request)
    sizes = [len(group) for group in body.inputs]
    if body.on_error == "skip":
        items = Items(texts)
        await items.embed(ctx, model, body.truncate, choice, use_cache=body.use_cache, json=True)
        outcome, batches = items.outcome, encoding.groups_json(items.outcome.vectors, sizes, item_rows(items))
    else:
        outcome = await ctx.embed(model, choice.inputs(texts), body.truncate, use_cache=body.use_cache, json=True,
                                  normalize=choice.normalize, truncation_direction=choice.direction)  # fmt: skip
        batches = encoding.groups_json(outcome.vectors, sizes, outcome.json_rows)
    served = len(outcome.tokens)
    answer = BatchEmbedResponse(model=model, batches=batches, cache_stats=cache_stats(outcome.cache_hits, served))
    return respond_served(request, encoding.encode(answer), outcome, served)


def item_rows(items: Items) -> list[bytes]:
    """Every text's JSON in request order: its vector, or its ``FailedItem``."""
    rows: list[bytes] = [b""] * len(items.texts)
    for index, row in zip(items.live, items.served_rows()):
        rows[index] = bytes(row)
    for index, error in items.failures.items():
        rows[index] = encoding.encode(FailedItem(items.offset + index, error))
    return rows


def item_error(exc: errors.ApiError, index: int) -> ItemError:
    """The error as one input's: its message names ``index``, the input's place in the request."""
    return ItemError(exc.type, renamed_message(exc, index))


def cache_stats(hits: int, served: int) -> CacheStats:
    return CacheStats(hits=hits, misses=served - hits, hit_rate=hits / served if served else 0.0)


def register(add: AddRoute) -> None:
    add("POST", "/api/embed/batch", embed_batch, RouteDoc(
        "Embed groups of texts in one call", "embeddings", body=documented(BatchEmbed),
        example={"inputs": [["hello world", "a second text"], ["another group"]]},
        content=json_answer(BatchEmbedResponse), headers=EMBED_HEADERS, errors=WORK_ERRORS, refs=(FailedItem,),
        description="`batches` has the groups of `inputs`, each a list of vectors. With `on_error: skip` an input "
                    "that cannot be served answers as a `FailedItem` in its place and the others are served. "
                    + OPTIONS_DOC))
