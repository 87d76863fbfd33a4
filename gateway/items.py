"""Many inputs served in one call however many of them fail: an input that cannot be served
fails alone (``on_error: "skip"`` on the batch route, the stream, every job chunk).

1. A blank input (an empty or whitespace-only text, an empty token list) is set aside at once:
   there is nothing to embed, and no worker needs to say so.
2. One call serves every input still live, asking to ``isolate`` them: a worker then answers
   per item (``workers/refusals.py``). Each input refused on its own (too long with ``truncate:
   false``, a token id the tokenizer refuses) comes back in ``EmbedOutcome.refused`` (a rerank
   job chunk's in ``RerankOutcome.refused``) with the error it would have failed the call with,
   its message ending "(input N)"; it is set aside with that error, and every other input has
   its vector (score). One round, whatever the failures.
3. Fallback: a call that still fails whole for ONE input it names (a backend that does not
   answer per item: a worker from before ``isolate``, a test double) sets that input aside and
   step 2 runs again without it. Every such round sets one input aside, so a call is made at
   most ``len(inputs)`` times, and none after the deadline: the old cost, up to about n²/2
   input sends for n inputs, is kept only where per-item answers are not to be had.

An error that names no input, and every request error (429, 503, 504), is raised. The messages
a client sees are the same either way: the worker's message, then "(input N)" naming the
input's place in what the client sent (``renamed_message``).
"""

from __future__ import annotations

import asyncio
import re
from typing import Awaitable, Callable, TypeVar

from appliance.protocol import Input
from gateway import errors

T = TypeVar("T")

# Errors about one input, not about the request: a worker's ``input_too_long`` and ``invalid_input``.
INPUT_ERRORS = (errors.InputTooLong, errors.InvalidField)
# The only place the "(input N)" suffix is read or rewritten.
NAMED_INPUT = re.compile(r"\(input (\d+)\)$")


def is_blank(item: Input) -> bool:
    return not item.strip() if isinstance(item, str) else not item


def blank_error(index: int) -> errors.ApiError:
    return errors.EmptyInput(f"input {index} is blank: nothing to embed")


def named_input(exc: errors.ApiError) -> int | None:
    """The call's input an input error names, or None when it names none."""
    found = NAMED_INPUT.search(exc.message)
    return int(found.group(1)) if found else None


def renamed_message(exc: errors.ApiError, index: int) -> str:
    """The error's message naming ``index`` (the input's place in what the client sent)."""
    return NAMED_INPUT.sub(f"(input {index})", exc.message)


async def serve_isolating(call: Callable[[list[int]], Awaitable[tuple[T, dict[int, errors.ApiError]]]],
                          live: list[int], deadline: float, failures: dict[int, errors.ApiError]) -> T | None:  # fmt: skip
    """``call(live)`` (steps 2 and 3): it answers its result and the inputs it refused, by their
    place in the call; each refused index moves from ``live`` to ``failures``, so that ``live``
    is left with the served inputs, in the result's order. A call that raises an input error
    naming one of ``live`` moves that one and is made again. The result, or None when no input
    was left to serve. ``deadline`` is on the event loop's clock."""
    loop = asyncio.get_running_loop()
    while live:
        try:
            result, refused = await call(live)
        except INPUT_ERRORS as exc:
            at = named_input(exc)
            if at is None or at >= len(live) or loop.time() >= deadline:
                raise
            failures[live.pop(at)] = exc
            continue
        set_aside(refused, live, failures)
        return result
    return None


def set_aside(refused: dict[int, errors.ApiError], live: list[int], failures: dict[int, errors.ApiError]) -> None:
    """Move each refused place of ``live`` to ``failures`` (from the last: the places shift)."""
    for at in sorted(refused, reverse=True):
        failures[live.pop(at)] = refused[at]
