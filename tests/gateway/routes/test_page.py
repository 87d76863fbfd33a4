"""``gateway/routes/page.py``: ``GET /`` is the status page, one static HTML file that carries no
data and names no other host, stays small, revalidates by ETag, allows only its own inline
script and style, and stays open when API keys are configured while ``/stats`` does not. Over a
real server against the in-test backend (``fake_backend.FakeBackend``); the page as a browser renders
it is ``tests/gateway/test_status_page.py``'s.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Any, Callable

import msgspec

from fake_backend import CROSS, MAIN, STATIC, TEST_CONFIG
from http_checks import error_of

# Hand-written HTML, CSS and script: growing past this means something else crept in.
MAX_PAGE_BYTES = 24 * 1024
KEY = "sk-page-unit"


def test_the_page_is_html_that_revalidates(server, backend) -> None:
    r = server.get("/")
    assert r.status == 200 and r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert r.body.startswith(b"<!doctype html>") and b'fetch("stats"' in r.body
    assert r.headers["Cache-Control"] == "no-cache" and r.headers["X-Content-Type-Options"] == "nosniff"
    etag = r.headers["ETag"]
    again = server.get("/", headers={"If-None-Match": etag})
    assert (again.status, again.body, again.headers["ETag"]) == (304, b"", etag)
    assert server.get("/", headers={"If-None-Match": '"something-older"'}).status == 200
    head = server.request("HEAD", "/")
    assert (head.status, head.body, head.headers["Content-Length"]) == (200, b"", str(len(r.body)))


def test_the_page_carries_no_data_names_no_other_host_and_stays_small(server, backend) -> None:
    first = server.get("/").body
    backend.ready, backend.draining = False, True  # whatever the appliance's state, the same bytes
    assert server.get("/").body == first
    text = first.decode()
    for name in (MAIN, STATIC, CROSS):
        assert f'"{name}"' not in text and f">{name}<" not in text
    # the one URL in it is the SVG namespace, an identifier that is never fetched
    assert re.findall(r"(?:https?:)?//[\w.-]+\.\w+", text) == ["http://www.w3.org"]
    assert not re.search(r"<(?:link|script|img|iframe)[^>]*\s(?:src|href)=\"(?!data:)", text)
    assert len(first) <= MAX_PAGE_BYTES, f"the page grew to {len(first)} bytes"


def test_only_the_pages_own_inline_script_and_style_may_run(server, backend) -> None:
    r = server.get("/")
    policy = dict(part.strip().split(" ", 1) for part in r.headers["Content-Security-Policy"].split(";"))
    script = re.search(rb"<script>(.*?)</script>", r.body, re.DOTALL)
    style = re.search(rb"<style>(.*?)</style>", r.body, re.DOTALL)
    assert script and style
    assert policy["script-src"] == f"'sha256-{sha256_b64(script.group(1))}'"
    assert policy["style-src"] == f"'sha256-{sha256_b64(style.group(1))}'"
    assert (policy["default-src"], policy["connect-src"]) == ("'none'", "'self'")


def test_the_page_stays_open_with_api_keys_while_stats_wants_one(
    tmp_path: Path, start_server: Callable[..., Any]
) -> None:
    keys = tmp_path / "api_keys"
    keys.write_text(KEY + "\n")
    server, _ = start_server(msgspec.structs.replace(TEST_CONFIG, api_keys_file=str(keys)))
    assert server.get("/").status == 200
    error_of(server.get("/stats"), 401, "unauthorized")
    assert server.get("/stats", headers={"Authorization": f"Bearer {KEY}"}).status == 200
    error_of(server.get("/index.html"), 401, "unauthorized")  # only "/" itself is open


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()
