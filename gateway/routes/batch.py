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
import re
from itertools import chain
from typing import Sequence

import msgspec
import numpy as np
from aiohttp import web

from gateway import encoding, errors
from gateway.backend import EmbedOutcome
from gateway.context import CONTEXT, Context
from gateway.routes.answers import AddRoute, outcome_headers, respond
from gateway.routes.checks import check_inputs, read_json
from gateway.schemas import BatchEmbed, BatchEmbedResponse, CacheStats, FailedItem, ItemError

_decoder = msgspec.json.Decoder(BatchEmbed)

# Errors about one input, not about the request: a worker's ``input_too_long`` (too many tokens
# with truncate: false) and ``invalid_input`` (its tokenizer refused it).
INPUT_ERRORS = (errors.InputTooLong, errors.InvalidField)

# Where such an error names its input: ``Part.failure_text`` (gateway/parts.py) ends the worker's
# message with "(input N)", N counting from 0 over the inputs of the embed call that failed.
# The only place that format is read.
NAMED_INPUT = re.compile(r"\(input (\d+)\)$")

NOTHING_SERVED = EmbedOutcome(vectors=np.zeros((0, 0), dtype=np.float32), tokens=[])


def named_input(exc: errors.ApiError) -> int | None:
    """The index an input error names, or None when it names none."""
    found = NAMED_INPUT.search(exc.message)
    return int(found.group(1)) if found else None


def renamed(exc: errors.ApiError, index: int) -> ItemError:
    """The error as one input's: its message names ``index``, the input's place in the client's request."""
    return ItemError(exc.type, NAMED_INPUT.sub(f"(input {index})", exc.message))


class Items:
    """Texts embedded in as few calls as their failures allow: ``embed`` serves those it can and
    keeps, per text, why each of the others was not served.

    1. A blank text (empty, or only whitespace) is set aside at once: ``empty_input``.
    2. Every text still ``live`` goes to ``Context.embed`` in one call.
    3. An input error that names a text sets that text aside, and step 2 runs again without it.

    Every round but the last sets one text aside, so there are at most ``len(texts)`` rounds, and
    none starts after ``request_timeout`` from the first; then, or when the error names no text,
    the error is raised, as is every request error (429, 503, 504). ``offset`` is the place of
    ``texts[0]`` in the client's request: the messages of the failures name that place.
    """

    def __init__(self, texts: Sequence[str], offset: int = 0) -> None:
        self.texts = texts
        self.offset = offset
        self.failures: dict[int, ItemError] = {
            i: ItemError(errors.EmptyInput.type, f"input {offset + i} is blank: nothing to embed")
            for i, text in enumerate(texts) if not text.strip()
        }  # fmt: skip
        self.live = [i for i in range(len(texts)) if i not in self.failures]  # after embed: the served
        self.outcome = NOTHING_SERVED  # the served texts' vectors, in the order of ``live``

    async def embed(self, ctx: Context, model: str, truncate: bool, *, use_cache: bool = True,
                    json: bool = False) -> None:  # fmt: skip
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ctx.config.request_timeout
        while self.live:
            try:
                batch = [self.texts[i] for i in self.live]
                self.outcome = await ctx.embed(model, batch, truncate, use_cache=use_cache, json=json)
                return
            except INPUT_ERRORS as exc:
                if loop.time() >= deadline or not self.set_aside(exc):
                    raise

    def set_aside(self, exc: errors.ApiError) -> bool:
        """Move the live text ``exc`` names to the failures; False when it names none."""
        at = named_input(exc)
        if at is None or at >= len(self.live):
            return False
        index = self.live.pop(at)
        self.failures[index] = renamed(exc, self.offset + index)
        return True

    def fail_rest(self, exc: errors.ApiError) -> None:
        """Every text not yet served fails with ``exc`` (a request error)."""
        for index in self.live:
            self.failures[index] = ItemError(exc.type, exc.message)
        self.live = []

    def served_rows(self) -> list[msgspec.Raw]:
        """The served texts' vectors as JSON arrays, in the order of ``live``."""
        return encoding.rows_json(self.outcome.vectors, self.outcome.json_rows) if self.live else []


async def read_batch(request: web.Request) -> tuple[Context, BatchEmbed, str, list[str]]:
    """The door of this route and of the stream: admitted, the body read, the model resolved, the
    texts (every group, in order) checked and admitted. (context, body, model name, texts)"""
    ctx = request.app[CONTEXT]
    ctx.admit(request)
    body = await read_json(request, _decoder)
    card = ctx.embedding_model(body.model)
    texts = list(chain.from_iterable(body.inputs))
    check_inputs(texts, ctx.config, field="inputs")
    ctx.admit_inputs(request, len(texts))
    return ctx, body, card.name, texts


async def embed_batch(request: web.Request) -> web.Response:
    ctx, body, model, texts = await read_batch(request)
    sizes = [len(group) for group in body.inputs]
    if body.on_error == "skip":
        items = Items(texts)
        await items.embed(ctx, model, body.truncate, use_cache=body.use_cache, json=True)
        outcome, batches = items.outcome, encoding.groups_json(items.outcome.vectors, sizes, item_rows(items))
    else:
        outcome = await ctx.embed(model, texts, body.truncate, use_cache=body.use_cache, json=True)
        batches = encoding.groups_json(outcome.vectors, sizes, outcome.json_rows)
    served = len(outcome.tokens)
    answer = BatchEmbedResponse(model=model, batches=batches, cache_stats=cache_stats(outcome.cache_hits, served))
    return respond(encoding.encode(answer), headers=outcome_headers(outcome, served))


def item_rows(items: Items) -> list[bytes]:
    """Every text's JSON in request order: its vector, or its ``FailedItem``."""
    rows: list[bytes] = [b""] * len(items.texts)
    for index, row in zip(items.live, items.served_rows()):
        rows[index] = bytes(row)
    for index, error in items.failures.items():
        rows[index] = encoding.encode(FailedItem(items.offset + index, error))
    return rows


def cache_stats(hits: int, served: int) -> CacheStats:
    return CacheStats(hits=hits, misses=served - hits, hit_rate=hits / served if served else 0.0)


def register(add: AddRoute) -> None:
    add("POST", "/api/embed/batch", embed_batch)
