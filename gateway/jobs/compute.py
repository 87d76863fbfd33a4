"""One job chunk computed into per-item results: an item that cannot be served fails alone.

A chunk goes to the backend as one call (so the workers batch it, and it uses the result cache
and coalescing like any request), at background priority. When the backend refuses the call
because of ONE input (too long with ``truncate: false``, an invalid token id: the worker names
its index), that item gets its error and the rest of the chunk is sent again without it; every
round removes at least one item, so a chunk takes at most ``len(chunk)`` rounds. Any other error
(a worker lost twice, no holder within the deadline, a full queue) is about the chunk, not an
item, and is raised for the runner to retry the whole chunk later.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Sequence

import numpy as np

from appliance.protocol import BACKGROUND, Input
from gateway import encoding, errors
from gateway.backend import Backend
from gateway.jobs.model import ItemResult

# the worker's message names the input by its index in the call: "... (input 3)" (gateway/parts.py)
INPUT_INDEX = re.compile(r"\(input (\d+)\)\s*$")
ITEM_ERRORS = (errors.InputTooLong, errors.InvalidField, errors.EmptyInput)


def failed_index(error: errors.ApiError) -> int | None:
    """The call's input an input error blames, or None when it names none."""
    match = INPUT_INDEX.search(error.message)
    return int(match.group(1)) if match else None


def item_error(index: int, error: errors.ApiError) -> ItemResult:
    return ItemResult(index=index, vector=None, score=None, tokens=0, error_type=error.type,
                      error_message=error.message)  # fmt: skip


async def compute_chunk(backend: Backend, task: str, model: str, options: dict[str, Any], start: int,
                        inputs: Sequence[Input], timeout: float) -> list[ItemResult]:  # fmt: skip
    """Every item of the chunk ``inputs`` (job indices from ``start``) with a result or an error."""
    results: dict[int, ItemResult] = {}
    pending = [i for i, item in enumerate(inputs) if item_is_servable(item, start + i, results)]
    while pending:
        try:
            served = await serve(backend, task, model, options, [inputs[i] for i in pending], timeout)
        except ITEM_ERRORS as exc:
            blamed = failed_index(exc)
            if blamed is None or not 0 <= blamed < len(pending):
                raise  # not about one item we can point at: the chunk fails as a whole
            results[start + pending[blamed]] = item_error(start + pending[blamed], exc)
            del pending[blamed]
            continue
        for i, made in zip(pending, served):
            results[start + i] = made(start + i)
        pending = []
    return [results[start + i] for i in range(len(inputs))]


def item_is_servable(item: Input, index: int, results: dict[int, ItemResult]) -> bool:
    """An empty text or token list has nothing to embed: it fails here, without a backend call."""
    if len(item) == 0:
        results[index] = item_error(index, errors.EmptyInput("the input is empty: nothing to embed"))
        return False
    return True


async def serve(backend: Backend, task: str, model: str, options: dict[str, Any], items: list[Input],
                timeout: float) -> list[Any]:  # fmt: skip
    """One backend call; a result maker per item (it takes the item's job index)."""
    deadline = asyncio.get_running_loop().time() + timeout
    truncate = bool(options.get("truncate", True))
    if task == "rerank":
        outcome = await backend.rerank(model, str(options["query"]), [str(item) for item in items],
                                       truncate=truncate, deadline=deadline, priority=BACKGROUND)  # fmt: skip
        return [score_maker(float(score), tokens) for score, tokens in zip(outcome.scores, outcome.tokens)]
    outcome = await backend.embed(model, items, truncate=truncate, deadline=deadline,
                                  use_cache=bool(options.get("use_cache", True)), priority=BACKGROUND)  # fmt: skip
    vectors = encoding.shorten(np.asarray(outcome.vectors, dtype=np.float32), options.get("dimensions"))
    return [vector_maker(vector.astype("<f4").tobytes(), tokens) for vector, tokens in zip(vectors, outcome.tokens)]


def vector_maker(vector: bytes, tokens: int) -> Any:
    return lambda index: ItemResult(index=index, vector=vector, score=None, tokens=tokens, error_type=None,
                                    error_message=None)  # fmt: skip


def score_maker(score: float, tokens: int) -> Any:
    return lambda index: ItemResult(index=index, vector=None, score=score, tokens=tokens, error_type=None,
                                    error_message=None)  # fmt: skip
