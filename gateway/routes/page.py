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
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from gateway.route_docs import HTML, TEXT, RouteDoc
from gateway.routes.answers import AddRoute

PAGE_FILE = Path(__file__).resolve().parent.parent / "static" / "status.html"
INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


@dataclass(frozen=True)
class StaticPage:
    body: bytes
    etag: str
    headers: dict[str, str]


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
def status_page(path: Path = PAGE_FILE) -> StaticPage:
    """The page as served, built on first use (it never changes while the process runs)."""
    body = path.read_bytes()
    etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
    headers = {
        "ETag": etag,
        "Cache-Control": "no-cache",  # revalidate every load: cheap (304), and an upgrade shows at once
        "Content-Security-Policy": content_security_policy(body.decode()),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    return StaticPage(body=body, etag=etag, headers=headers)


def is_fresh(request: web.Request, etag: str) -> bool:
    """The client's cached copy is this one (``If-None-Match`` names our ETag, or ``*``)."""
    sent = request.headers.get("If-None-Match", "")
    return any(tag.strip().removeprefix("W/") in (etag, "*") for tag in sent.split(",") if tag.strip())


async def page(request: web.Request) -> web.Response:
    static = status_page()
    if is_fresh(request, static.etag):
        return web.Response(status=304, headers=static.headers)
    return web.Response(body=static.body, content_type="text/html", charset="utf-8", headers=static.headers)


def register(add: AddRoute) -> None:
    add("GET", "/", page, RouteDoc("The status page (HTML; it reads /stats)", "operations", content={HTML: TEXT}))
