"""Many inputs served in as few calls as their failures allow: an input that cannot be served
fails alone (``on_error: "skip"`` on the batch route, the stream, every job chunk).

1. A blank input (an empty or whitespace-only text, an empty token list) is set aside at once:
   there is nothing to embed, and no worker needs to say so.
2. One call serves every input still live.
3. When the call is refused because of ONE input (too long with ``truncate: false``, a token id
   the tokenizer refuses), the worker names it: ``Part.failure_text`` (``gateway/parts.py``) ends
   the message with "(input N)", N counting the call's inputs. That input is set aside with its
   error and step 2 runs again without it.

Every round but the last sets one input aside, so a call is made at most ``len(inputs)`` times,
and none after the deadline; an error that names no input, and every request error (429, 503,
504), is raised. The cost to know: each round sends the remaining inputs again, so many bad
inputs in one request cost up to about n²/2 input sends (the deadline bounds it).
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


async def serve_isolating(call: Callable[[list[int]], Awaitable[T]], live: list[int], deadline: float,
                          failures: dict[int, errors.ApiError]) -> T | None:  # fmt: skip
    """``call(live)`` until it succeeds (steps 2 and 3): each input error that names one of
    ``live`` moves that index from ``live`` to ``failures``. The successful call's result, or
    None when no input was left to serve. ``deadline`` is on the event loop's clock."""
    loop = asyncio.get_running_loop()
    while live:
        try:
            return await call(live)
        except INPUT_ERRORS as exc:
            at = named_input(exc)
            if at is None or at >= len(live) or loop.time() >= deadline:
                raise
            failures[live.pop(at)] = exc
    return None
