"""``GET /``: the live status page, one hand-written HTML file (``gateway/static/status.html``)
with its CSS and script inline. No framework, no build step, nothing fetched from elsewhere.

The page carries no data. Its script reads ``/stats`` every two seconds and draws the workers,
traffic, latency and cache charts, queue depth, memory headroom and scaling advice from it, so
the file is the same bytes for every client and every moment: it is read once, served from
memory with an ``ETag`` and ``Cache-Control: no-cache`` (a browser revalidates and gets a 304
until an upgrade changes the file).

``/`` stays open when API keys are configured (``gateway.admission.OPEN_PATHS``): the page holds
nothing secret. ``/stats`` stays keyed; when it answers 401 the page asks for a key, keeps it in
``sessionStorage`` (gone with the tab) and sends it as ``Authorization: Bearer``.

The ``Content-Security-Policy`` allows exactly the inline script and style of this file, by
hash, and connections to this origin only: an injected tag, or a page edit that pulls something
from another host, does not run.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re

from aiohttp import web

from gateway.route_docs import HTML, TEXT, RouteDoc
from gateway.routes.answers import AddRoute
from gateway.static_files import StaticFile, read_static, respond_static, static_file

INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


def content_security_policy(html: str) -> str:
    """Only this file's own inline blocks run or style the page; ``fetch`` reaches this origin only."""
    allowed: dict[str, list[str]] = {"script": [], "style": []}
    for tag, text in INLINE.findall(html):
        allowed[tag].append("'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'")
    return "; ".join([
        "default-src 'none'",
        "script-src " + (" ".join(allowed["script"]) or "'none'"),
        "style-src " + (" ".join(allowed["style"]) or "'none'"),
        "connect-src 'self'",
        "img-src data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ])  # fmt: skip


@functools.cache
def status_page() -> StaticFile:
    """The page as served, built on first use (it never changes while the process runs)."""
    body = read_static("status.html")
    return static_file(body, HTML, content_security_policy(body.decode()))


async def page(request: web.Request) -> web.Response:
    return respond_static(request, status_page())


def register(add: AddRoute) -> None:
    add("GET", "/", page, RouteDoc("The status page (HTML; it reads /stats)", "operations", content={HTML: TEXT}))
