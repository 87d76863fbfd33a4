"""``GET /openapi.json`` (the OpenAPI 3.1 description of this app's routes, ``gateway/openapi.py``)
and ``GET /docs``, a page that renders it in a browser from files the appliance serves itself
(``gateway/static/``): no CDN, no network, no build step. All of them carry no data and stay
open when API keys are configured (``OPEN_PATHS`` in ``gateway/admission.py``).
"""

from __future__ import annotations

import functools
from importlib import resources

from aiohttp import web

from gateway.openapi import API_DESCRIPTION
from gateway.route_docs import CSS, HTML, JAVASCRIPT, TEXT, RouteDoc, json_answer
from gateway.routes.answers import AddRoute, Handler, respond

STATIC = resources.files("gateway") / "static"
# The page may load only what this appliance serves: a stray external URL would be refused.
PAGE_POLICY = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:"
# path -> (file under gateway/static, media type)
FILES = {
    "/docs": ("docs.html", HTML),
    "/docs/docs.js": ("docs.js", JAVASCRIPT),
    "/docs/docs.css": ("docs.css", CSS),
}


async def openapi(request: web.Request) -> web.Response:
    return respond(request.app[API_DESCRIPTION].encoded())


@functools.cache
def read_static(name: str) -> bytes:
    return (STATIC / name).read_bytes()


def static_file(name: str, media: str) -> Handler:
    """A handler for one static file, read once per process."""
    body = read_static(name)
    headers = {"Cache-Control": "no-cache", "Content-Security-Policy": PAGE_POLICY}

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=media, charset="utf-8", headers=headers)

    return serve


def register(add: AddRoute) -> None:
    add("GET", "/openapi.json", openapi, RouteDoc(
        "This description (OpenAPI 3.1)", "docs", content=json_answer(dict)))  # fmt: skip
    for path, (name, media) in FILES.items():
        add("GET", path, static_file(name, media), RouteDoc(
            f"The API docs page: {name}", "docs", content={media: TEXT}))  # fmt: skip
