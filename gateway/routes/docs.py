"""``GET /openapi.json`` (the OpenAPI 3.1 description of this app's routes, ``gateway/openapi.py``)
and ``GET /docs``, a page that renders it in a browser from files the appliance serves itself
(``gateway/static/``): no CDN, no network, no build step. All of them carry no data and stay
open when API keys are configured (``OPEN_PATHS`` in ``gateway/admission.py``).
"""

from __future__ import annotations

from aiohttp import web

from gateway.openapi import API_DESCRIPTION
from gateway.route_docs import CSS, HTML, JAVASCRIPT, TEXT, RouteDoc, json_answer
from gateway.routes.answers import AddRoute, respond
from gateway.static_files import read_static, serving, static_file

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


def register(add: AddRoute) -> None:
    add("GET", "/openapi.json", openapi, RouteDoc(
        "This description (OpenAPI 3.1)", "docs", content=json_answer(dict)))  # fmt: skip
    for path, (name, media) in FILES.items():
        add("GET", path, serving(static_file(read_static(name), media, PAGE_POLICY)), RouteDoc(
            f"The API docs page: {name}", "docs", content={media: TEXT}))  # fmt: skip
