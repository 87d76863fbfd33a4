"""Parts: a request cut into work records that fit a worker's ring, and their answers merged.

A part is one slice of a request in flight on one worker: one ``Embed`` or ``Rerank`` record on
that worker's request ring, and one future the router resolves with the worker's answer.

Cutting (``cut``) bounds each part twice: its request record (the inputs, ``record_bytes`` an
upper bound of each one's msgpack size) and its answer record (``answer_bytes`` per input) must
each fit in half a ring (``record_budget``), the most a ring takes in one record. A request of
``SPLIT_MIN_INPUTS`` or more inputs is also spread over every worker that holds its model.

Merging (``merge_vectors``) puts the parts' rows back in request order; an isolating request's
refused inputs (``Vectors.refused``) become errors named by their index in the whole request.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from appliance.protocol import INTERACTIVE, Embed, Failed, Input, Refusal, Rerank, Scores, Vectors
from gateway import errors
from gateway.backend import EmbedOutcome, Timings

SPLIT_MIN_INPUTS = 64  # below this, one worker does a request (splitting costs more than it saves)
RECORD_SLACK = 4096  # room in a half-ring record for the message envelope around the inputs
ANSWER_ROW_SLACK = 16  # msgpack framing and the token count of one answer row


@dataclass(slots=True)
class Part:
    """One work record in flight: a slice of a request on one worker."""

    id: int
    model: str
    message: Embed | Rerank
    inputs: int
    tokens: int  # estimated, for least-outstanding-tokens routing
    offset: int  # index of its first input in the whole request
    future: asyncio.Future[Vectors | Scores]
    deadline: float  # the request's, on the event loop's clock: the router's sweep fails it past this
    worker: int = -1  # where it is in flight now, -1 when nowhere
    served_by: int = -1  # the worker whose answer resolved it
    resent: bool = False

    @property
    def background(self) -> bool:
        """Below interactive work: at most one such part per worker (``gateway/router.py``)."""
        return self.message.priority > INTERACTIVE

    def failure_text(self, failed: Failed) -> str:
        """The worker's message, naming the input by its index in the whole request."""
        if failed.index < 0:
            return failed.message
        return f"{failed.message} (input {failed.index + self.offset})"

    def refused(self, result: Vectors | Scores) -> dict[int, errors.ApiError]:
        """An isolating part's refused inputs by their index in the whole request, each with the
        error its ``Failed`` would have raised."""
        return {self.offset + r.index: refusal_error(r, self.offset) for r in getattr(result, "refused", ())}


def refusal_error(refusal: Refusal, offset: int) -> errors.ApiError:
    return errors.from_worker_failure(refusal.kind, f"{refusal.message} (input {refusal.index + offset})")


def record_budget(ring_bytes: int) -> int:
    """The most bytes one part's record may take: half a ring, less the envelope."""
    return ring_bytes // 2 - RECORD_SLACK


def cut(inputs: Sequence[Input], *, answer_bytes: int, budget: int, ways: int) -> list[tuple[int, int]]:
    """``[start, end)`` slices of ``inputs``: each part's request and answer fit ``budget``
    bytes, and a big request is spread over ``ways`` workers."""
    n = len(inputs)
    if n == 1:  # one input is one part, whatever its size (``dispatch`` refuses one too large)
        return [(0, 1)]
    per_record = max(1, budget // (answer_bytes + ANSWER_ROW_SLACK))
    ways = ways if n >= SPLIT_MIN_INPUTS and ways > 1 else 1
    size = min(per_record, -(-n // ways))
    cuts: list[tuple[int, int]] = []
    start, used = 0, 0
    for i, item in enumerate(inputs):
        cost = record_bytes(item)
        if i > start and (i - start >= size or used + cost > budget):
            cuts.append((start, i))
            start, used = i, 0
        used += cost
    cuts.append((start, n))
    return cuts


def record_bytes(item: Input) -> int:
    """Upper bound of an input's bytes in a msgpack record (str.isascii is O(1) in CPython)."""
    if isinstance(item, list):
        return 5 * len(item) + 5
    return (len(item) if item.isascii() else 4 * len(item)) + 5


def estimate_tokens(item: Input) -> int:
    # ~4 characters per token for English WordPiece, plus [CLS]/[SEP]; close enough to balance load.
    return len(item) if isinstance(item, list) else len(item) // 4 + 2


def served_by(parts: list[Part]) -> str:
    """The workers that answered, as ``X-Worker-ID`` shows them: "0" or "0,1"."""
    if len(parts) == 1:
        worker = parts[0].served_by
        return str(worker) if worker >= 0 else ""
    return ",".join(str(w) for w in sorted({p.served_by for p in parts if p.served_by >= 0}))


def merge_vectors(parts: list[Part], results: list[Vectors | Scores]) -> EmbedOutcome:
    """The parts' vectors in request order (parts are cut in order and awaited in order), and
    the inputs they refused (an isolating request's)."""
    outcome = merge_rows(results)
    for part, result in zip(parts, results):
        if getattr(result, "refused", None):
            outcome.refused = {**outcome.refused, **part.refused(result)}
    return outcome


def merge_rows(results: list[Vectors | Scores]) -> EmbedOutcome:
    if len(results) == 1 and isinstance(only := results[0], Vectors):  # the common case, without the merging
        return EmbedOutcome(only.array(), only.tokens, "", Timings(only.queue_us, only.tokenize_us, only.compute_us))
    vectors = [r for r in results if isinstance(r, Vectors)]
    arrays = [v.array() for v in vectors]
    matrix = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
    tokens = [t for v in vectors for t in v.tokens]
    timings = Timings(
        queue_us=max(v.queue_us for v in vectors),
        tokenize_us=max(v.tokenize_us for v in vectors),
        compute_us=max(v.compute_us for v in vectors),
    )
    return EmbedOutcome(matrix, tokens, "", timings)
