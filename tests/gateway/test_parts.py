"""``gateway/parts.py``'s merge of an isolating request's parts: each part's rows in request
order, and each part's refusals named by their index in the whole request, as the error a
``Failed`` for them would have raised."""

from __future__ import annotations

import asyncio

import numpy as np

from appliance.protocol import Embed, FailureKind, Refusal, Vectors, f32_bytes
from gateway import errors
from gateway.parts import Part, merge_vectors


def part(offset: int, count: int, loop: asyncio.AbstractEventLoop) -> Part:
    message = Embed(offset, "m", ["x"] * count, isolate=True)
    return Part(offset, "m", message, count, count, offset, loop.create_future(), 0.0)


def answer(rows: np.ndarray, refused: list[Refusal]) -> Vectors:
    return Vectors(0, 2, f32_bytes(rows), [3] * len(rows), refused=refused)


def test_the_parts_refusals_are_named_by_their_place_in_the_request() -> None:
    loop = asyncio.new_event_loop()
    try:
        parts = [part(0, 3, loop), part(3, 3, loop), part(6, 2, loop)]
        rows = np.arange(10, dtype=np.float32).reshape(5, 2)
        results = [
            answer(rows[:2], [Refusal(1, FailureKind.INPUT_TOO_LONG, "input 1 has 300 tokens")]),
            answer(rows[2:3], [Refusal(0, FailureKind.INVALID_INPUT, "input 0: bad id"),
                               Refusal(2, FailureKind.INPUT_TOO_LONG, "input 2 has 200 tokens")]),  # fmt: skip
            answer(rows[3:], []),
        ]
        outcome = merge_vectors(parts, results)
    finally:
        loop.close()
    np.testing.assert_array_equal(outcome.vectors, rows)
    assert outcome.tokens == [3] * 5 and sorted(outcome.refused) == [1, 3, 5]
    assert isinstance(outcome.refused[1], errors.InputTooLong) and isinstance(outcome.refused[3], errors.InvalidField)
    assert outcome.refused[3].message == "input 0: bad id (input 3)"
    assert outcome.refused[5].message == "input 2 has 200 tokens (input 5)"


def test_a_plain_answer_refuses_nothing() -> None:
    loop = asyncio.new_event_loop()
    try:
        outcome = merge_vectors([part(0, 2, loop)], [answer(np.ones((2, 2), np.float32), [])])
    finally:
        loop.close()
    assert outcome.refused == {} and outcome.vectors.shape == (2, 2)
