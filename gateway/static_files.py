"""The files under ``gateway/static/`` as the routes serve them (the status page at ``/``, the
``/docs`` page and its script and style): read once, served from memory with an ``ETag`` (a
revalidating browser gets a 304 until an upgrade changes the file), ``Cache-Control: no-cache``,
the route's ``Content-Security-Policy``, ``nosniff`` and ``no-referrer``. None of them carries
data, so they are the same bytes for every client.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Awaitable, Callable

from aiohttp import web

STATIC = resources.files("gateway") / "static"


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    media: str
    etag: str
    headers: dict[str, str]


@functools.cache
def read_static(name: str) -> bytes:
    return (STATIC / name).read_bytes()


def static_file(body: bytes, media: str, policy: str) -> StaticFile:
    etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
    headers = {
        "ETag": etag,
        "Cache-Control": "no-cache",  # revalidate every load: cheap (304), and an upgrade shows at once
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    return StaticFile(body=body, media=media, etag=etag, headers=headers)


def is_fresh(request: web.Request, etag: str) -> bool:
    """The client's cached copy is this one (``If-None-Match`` names our ETag, or ``*``)."""
    sent = request.headers.get("If-None-Match", "")
    return any(tag.strip().removeprefix("W/") in (etag, "*") for tag in sent.split(",") if tag.strip())


def respond_static(request: web.Request, static: StaticFile) -> web.Response:
    if is_fresh(request, static.etag):
        return web.Response(status=304, headers=static.headers)
    return web.Response(body=static.body, content_type=static.media, charset="utf-8", headers=static.headers)


def serving(static: StaticFile) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A handler that answers with ``static``."""

    async def serve(request: web.Request) -> web.Response:
        return respond_static(request, static)

    return serve
