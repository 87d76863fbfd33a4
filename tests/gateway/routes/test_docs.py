"""``gateway/routes/docs.py``: ``GET /openapi.json`` and the ``/docs`` page's files over a real
server: the right content types, nothing fetched from anywhere but this appliance, and all of it
open when API keys are configured while the data routes still want a key.
"""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from fake_backend import TEST_CONFIG, ServerThread
from gateway.admission import Admission
from gateway.openapi import package_version
from gateway.routes.docs import FILES
from gateway.static_files import STATIC
from http_checks import error_of
from system_tools import CHROMIUM_ARGS

KEY = "sk-docs-test"
# any absolute or scheme-relative URL: the page must load only what the appliance serves
EXTERNAL = re.compile(rb"(?:https?:|wss?:|ftp:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}|(?:src|href)\s*=\s*[\"']?//")


def test_openapi_json_is_served_as_json(server: ServerThread) -> None:
    reply = server.get("/openapi.json")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("application/json")
    doc = reply.json()
    assert doc["openapi"] == "3.1.0" and doc["info"]["version"] == package_version()
    assert reply.headers["X-Request-ID"]
    assert server.get("/openapi.json").body == reply.body


@pytest.mark.parametrize("path, media", [(path, media) for path, (_, media) in FILES.items()])
def test_the_docs_files_are_served_with_their_content_types(server: ServerThread, path: str, media: str) -> None:
    reply = server.get(path)
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"] == f"{media}; charset=utf-8"
    assert "default-src 'none'" in reply.headers["Content-Security-Policy"]
    assert reply.body == (STATIC / FILES[path][0]).read_bytes()


def test_the_page_loads_only_its_own_files(server: ServerThread) -> None:
    page = server.get("/docs").body
    linked = re.findall(rb'(?:src|href)="([^"]+)"', page)
    assert sorted(linked) == [b"data:,", b"docs/docs.css", b"docs/docs.js", b"openapi.json"]  # data: the icon
    linked.remove(b"data:,")
    for name in linked:  # relative to /docs, so they resolve under any path prefix a proxy adds
        assert server.get("/" + name.decode()).status == 200
    for path in FILES:
        assert not EXTERNAL.search(server.get(path).body), path


def test_the_files_stay_small() -> None:
    assert sum(len((STATIC / name).read_bytes()) for name, _ in FILES.values()) < 12_000


def test_docs_stay_open_when_keys_are_configured(start_server, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY}\n")
    config = msgspec.structs.replace(TEST_CONFIG, api_keys_file=str(keys))
    server, _ = start_server(config, Admission.from_config(config))
    for path in ("/openapi.json", *FILES):
        assert server.get(path).status == 200, path
    error_of(server.get("/v1/models"), 401, "unauthorized")
    assert server.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status == 200


@pytest.mark.slow
def test_the_page_renders_every_operation_in_a_browser(server: ServerThread, chromium_installed: str) -> None:
    from playwright.sync_api import sync_playwright

    doc = server.get("/openapi.json").json()
    operations = sum(len(item) for item in doc["paths"].values())
    requested: list[str] = []
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_installed, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("request", lambda r: requested.append(r.url))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(server.url + "/docs", timeout=30_000)
            page.wait_for_selector("details.op", timeout=30_000)
            assert page.locator("details.op").count() == operations
            assert page.locator("main h2").all_inner_texts() == [t["name"] for t in doc["tags"]]
            embed = page.locator("details#post_v1_embeddings")
            embed.locator("summary").click()
            body = embed.inner_text()
            assert "encoding_format" in body and "Request body" in body and "422" in body
            assert "curl -s -H 'Authorization: Bearer KEY' -d '{\"input\"" in body
            stream = page.locator("details#post_api_embed_stream")
            stream.locator("summary").click()
            assert "event: complete" in stream.inner_text()
        finally:
            browser.close()
    assert not problems, problems
    assert requested and all(url.startswith(server.url + "/") for url in requested), requested
