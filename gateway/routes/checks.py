"""Request-side checks every work route shares: the body as a Struct, the input bounds."""

from __future__ import annotations

from typing import Sequence, TypeVar

import msgspec
from aiohttp import web

from appliance.config import Config
from appliance.protocol import Input
from gateway import errors
from gateway.backend import ModelCard
from gateway.schemas import decode

T = TypeVar("T")


# Arrays and objects a body may hold beyond one per input (a group, a token-id list, a ``{text}``
# document): the body itself, the input list, Ollama's ``options`` and vendor extras.
CONTAINER_SLACK = 256


async def read_json(request: web.Request, decoder: msgspec.json.Decoder[T], most_inputs: int) -> T:
    """The body as a request Struct. A declared length over the limit is refused before reading;
    an undeclared (chunked) one makes aiohttp raise HTTPRequestEntityTooLarge mid-read. A body
    with more arrays and objects than ``most_inputs`` can need is refused before it is decoded
    (``gateway/schemas.py`` ``decode``)."""
    limit = request.client_max_size
    if limit and request.content_length is not None and request.content_length > limit:
        raise errors.BodyTooLarge(f"request body of {request.content_length} bytes exceeds the {limit}-byte limit")
    return decode(decoder, await body_of(request), max_containers=most_inputs + CONTAINER_SLACK)


async def body_of(request: web.Request) -> bytes:
    """The request body. A body that has all arrived (most do: they come with the head) is taken
    from the stream at once, without ``request.read()``'s two awaited reads; the limit holds for
    it as ``read`` holds it (a chunked body has no length to refuse it by beforehand). Only the
    route reads a body, once, so nothing later asks ``request.read()`` for it."""
    content = request.content
    if not content.is_eof():
        return await request.read()
    body = content.read_nowait()  # raises the stream's exception (the body deadline's 408) like read
    limit = request.client_max_size
    if limit and len(body) > limit:
        raise web.HTTPRequestEntityTooLarge(limit, len(body))
    return body


def check_inputs(items: Sequence[Input], config: Config, field: str = "input") -> None:
    """Size limits for one request's texts (or token-id lists): 400 when there is nothing to
    embed, 422 when there is too much. A token-id list is held to the character bound too (a
    token is at least one character), so no input form escapes the limit."""
    if not items or not any(items):
        raise errors.EmptyInput(f"`{field}` is empty: nothing to embed")
    if len(items) > config.max_inputs:
        raise errors.TooManyInputs(f"`{field}` has {len(items)} items; the limit is {config.max_inputs}")
    if max(map(len, items)) > config.max_input_chars:
        index = next(i for i, item in enumerate(items) if len(item) > config.max_input_chars)
        raise errors.InputTooLong(
            f"`{field}[{index}]` has {len(items[index])} characters; the limit is {config.max_input_chars}"
        )


def check_groups(groups: Sequence[object], config: Config, field: str = "inputs") -> None:
    """Groups count toward ``max_inputs`` as texts do: an empty group costs as much to carry."""
    if len(groups) > config.max_inputs:
        raise errors.TooManyInputs(f"`{field}` has {len(groups)} groups; the limit is {config.max_inputs}")


def check_dimensions(dims: int | None, card: ModelCard) -> int | None:
    if dims is not None and dims > card.dim:
        raise errors.InvalidField(f"`dimensions` {dims} exceeds {card.name!r}'s {card.dim} - at `$.dimensions`")
    return dims
