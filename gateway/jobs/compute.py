"""One job chunk computed into per-item results: an item that cannot be served fails alone.

A chunk goes to the backend as one call (so the workers batch it, and it uses the result cache
and coalescing like any request), at background priority, with the options the job was
submitted with (resolved then: the prompt put before each text, the normalisation, the
truncation side). An item the backend refuses on its own (blank, too long with ``truncate:
false``, an invalid token id) gets its error and the rest are served in the same call (the
workers answer per item: ``gateway/items.py``). Any other error (a worker lost twice, no holder
within the deadline, a full queue) is about the chunk, not an item, and is raised for the runner
to retry the whole chunk later.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Sequence

import numpy as np

from appliance.protocol import BACKGROUND, Input, TruncationDirection
from gateway import encoding, errors
from gateway.backend import Backend
from gateway.items import blank_error, is_blank, renamed_message, serve_isolating
from gateway.prompts import apply_prompt
from gateway.jobs.model import ItemResult

Maker = Callable[[int], ItemResult]  # a served item's result, given its index in the job


def item_error(index: int, error: errors.ApiError) -> ItemResult:
    return ItemResult(index=index, error_type=error.type, error_message=renamed_message(error, index))


async def compute_chunk(backend: Backend, task: str, model: str, options: dict[str, Any], start: int,
                        inputs: Sequence[Input], timeout: float) -> list[ItemResult]:  # fmt: skip
    """Every item of the chunk ``inputs`` (job indices from ``start``), with a result or an error."""
    failures = {i: blank_error(start + i) for i, item in enumerate(inputs) if is_blank(item)}
    live = [i for i in range(len(inputs)) if i not in failures]

    async def call(chosen: list[int]) -> tuple[list[Maker], dict[int, errors.ApiError]]:
        return await serve(backend, task, model, options, [inputs[i] for i in chosen], timeout)

    deadline = asyncio.get_running_loop().time() + timeout
    makers = await serve_isolating(call, live, deadline, failures) or []
    results = {start + i: make(start + i) for i, make in zip(live, makers)}
    results.update({start + i: item_error(start + i, exc) for i, exc in failures.items()})
    return [results[start + i] for i in range(len(inputs))]


async def serve(backend: Backend, task: str, model: str, options: dict[str, Any], items: list[Input],
                timeout: float) -> tuple[list[Maker], dict[int, errors.ApiError]]:  # fmt: skip
    """One backend call: a result maker per served item (it takes the item's job index), and the
    errors of the items refused on their own, by their place in ``items``."""
    deadline = asyncio.get_running_loop().time() + timeout
    truncate = bool(options.get("truncate", True))
    left = options.get("truncation_direction") == "left"  # a job from before the option has no key
    direction: TruncationDirection = "left" if left else "right"
    if task == "rerank":
        outcome = await backend.rerank(model, str(options["query"]), [str(item) for item in items],
                                       truncate=truncate, deadline=deadline, priority=BACKGROUND,
                                       truncation_direction=direction, isolate=True)  # fmt: skip
        makers = [score_maker(float(score), tokens) for score, tokens in zip(outcome.scores, outcome.tokens)]
        return makers, outcome.refused
    normalize = options.get("normalize")  # None for a job submitted before the options existed
    outcome = await backend.embed(model, apply_prompt(str(options.get("prompt", "")), items), truncate=truncate,
                                  deadline=deadline, use_cache=bool(options.get("use_cache", True)),
                                  priority=BACKGROUND, normalize=normalize, truncation_direction=direction,
                                  isolate=True)  # fmt: skip
    vectors = encoding.shorten(np.asarray(outcome.vectors, dtype=np.float32), options.get("dimensions"),
                               normalize is not False)  # fmt: skip
    makers = [vector_maker(vector.astype("<f4").tobytes(), tokens) for vector, tokens in zip(vectors, outcome.tokens)]
    return makers, outcome.refused


def vector_maker(vector: bytes, tokens: int) -> Maker:
    return lambda index: ItemResult(index=index, vector=vector, tokens=tokens)


def score_maker(score: float, tokens: int) -> Maker:
    return lambda index: ItemResult(index=index, score=score, tokens=tokens)
