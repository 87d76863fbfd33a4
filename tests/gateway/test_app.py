"""``gateway/app.py`` and the checks every route shares (``gateway/routes/checks.py``), over a real
server against the in-test backend (``fake_backend.FakeBackend``): malformed and mistyped bodies,
the body, input and ``dimensions`` limits, unknown models, backend errors mapped to statuses (and
a 500 without a traceback), the deadline, request ids, the ``Server-Timing``, ``X-Worker-ID`` and
``X-Cache`` headers, and aiohttp's own 404 and 405 answered as JSON errors.
"""

from __future__ import annotations

import logging
import re
import time

import numpy as np
import pytest

from appliance.config import Config
from gateway import errors
from http_checks import (
    EMBED_ROUTES,
    MAX_BODY,
    MAX_CHARS,
    MAX_INPUTS,
    POST_BODIES,
    TIMEOUT_S,
    embed_body,
    error_of,
    vectors_of,
)


# ---- dimensions -----------------------------------------------------------------------------
@pytest.mark.parametrize("route", EMBED_ROUTES[:2])
def test_dimensions_cut_and_renormalise(server, backend, route):
    r = server.post(route, embed_body(route, ["alpha", "beta"], dimensions=3))
    got = vectors_of(route, r.json())
    full = backend.vectors_for("mini", ["alpha", "beta"])
    assert got.shape == (2, 3)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(got, full[:, :3] / np.linalg.norm(full[:, :3], axis=1, keepdims=True), rtol=1e-6)


@pytest.mark.parametrize("route", EMBED_ROUTES[:2])
def test_dimensions_at_full_width_change_nothing(server, backend, route):
    got = vectors_of(route, server.post(route, embed_body(route, ["alpha"], dimensions=8)).json())
    np.testing.assert_array_equal(got, backend.vectors_for("mini", ["alpha"]))


@pytest.mark.parametrize("dims", [0, -1, 9, "3"])
@pytest.mark.parametrize("route", EMBED_ROUTES[:2])
def test_dimensions_out_of_range_422(server, backend, route, dims):
    r = server.post(route, embed_body(route, ["alpha"], dimensions=dims))
    assert "$.dimensions" in error_of(r, 422, "invalid_field")
    assert backend.calls == []


# ---- parsing --------------------------------------------------------------------------------
@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b'{"input": "a",}', b'{"input": 1,}', b"\xff\xfe{}"])
@pytest.mark.parametrize("route", list(POST_BODIES))
def test_malformed_json_400(server, backend, route, raw):
    error_of(server.post(route, raw=raw), 400, "malformed_json")


@pytest.mark.parametrize(
    "route, body, path",
    [
        ("/api/embed", {"input": ["a", "b", 3]}, "$.input[2]"),
        ("/api/embed", {"input": "a", "truncate": "yes"}, "$.truncate"),
        ("/api/embed", {"model": 5, "input": "a"}, "$.model"),
        ("/v1/embeddings", {"input": "a", "encoding_format": "hex"}, "$.encoding_format"),
        ("/api/embed/batch", {"inputs": ["a"]}, "$.inputs[0]"),
        ("/api/embed/batch", {"inputs": [["a"]], "use_cache": 1}, "$.use_cache"),
        ("/api/rerank", {"query": "q", "documents": ["a"], "top_k": 0}, "$.top_k"),
        ("/v1/rerank", {"query": "q", "documents": [{"txt": "a"}]}, "$.documents[0]"),
        ("/v1/rerank", {"query": "q", "documents": ["a"], "return_documents": "true"}, "$.return_documents"),
    ],
)
def test_wrong_type_422_names_the_field(server, backend, route, body, path):
    assert path in error_of(server.post(route, body), 422, "invalid_field")
    assert backend.calls == []


@pytest.mark.parametrize("route, missing", [("/api/embed", "input"), ("/api/rerank", "query"), ("/api/embed/batch", "inputs")])
def test_missing_field_422(server, backend, route, missing):
    assert missing in error_of(server.post(route, {"model": "mini"}), 422, "invalid_field")


@pytest.mark.parametrize("route", list(POST_BODIES))
def test_unknown_fields_are_ignored(server, backend, route):
    body = {**POST_BODIES[route], "vendor_extra": {"nested": [1, 2]}, "keep_alive": "5m", "options": {"seed": 1}}
    assert server.post(route, body).status == 200


# ---- limits ---------------------------------------------------------------------------------
def padded(size: int) -> bytes:
    """A valid embed body of exactly ``size`` bytes (the padding is an ignored unknown field)."""
    head, tail = b'{"input": "a", "pad": "', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def test_body_at_the_limit_is_accepted(server, backend):
    assert server.post("/api/embed", raw=padded(MAX_BODY)).status == 200


def test_body_over_the_limit_413_with_content_length(server, backend):
    error_of(server.post("/api/embed", raw=padded(MAX_BODY + 1)), 413, "body_too_large")
    assert backend.calls == []


def test_body_over_the_limit_413_chunked(server, backend):
    body = padded(MAX_BODY + 4096)
    chunks = [body[i : i + 8192] for i in range(0, len(body), 8192)]
    error_of(server.post("/api/embed", chunks=chunks), 413, "body_too_large")
    assert backend.calls == []
    assert server.post("/api/embed", chunks=[b'{"input":', b' "a"}']).status == 200


@pytest.mark.parametrize("route", EMBED_ROUTES)
def test_too_many_inputs_422(server, backend, route):
    error_of(server.post(route, embed_body(route, ["x"] * (MAX_INPUTS + 1))), 422, "too_many_inputs")
    assert server.post(route, embed_body(route, ["x"] * MAX_INPUTS)).status == 200


@pytest.mark.parametrize("route", EMBED_ROUTES)
def test_input_too_long_422(server, backend, route):
    r = server.post(route, embed_body(route, ["ok", "x" * (MAX_CHARS + 1)]))
    assert "[1]" in error_of(r, 422, "input_too_long")
    assert server.post(route, embed_body(route, ["ok", "x" * MAX_CHARS])).status == 200


@pytest.mark.parametrize("route", EMBED_ROUTES)
@pytest.mark.parametrize("texts", [[], [""], ["", ""]])
def test_empty_input_400(server, backend, route, texts):
    error_of(server.post(route, embed_body(route, texts)), 400, "empty_input")
    assert backend.calls == []


@pytest.mark.parametrize("route, body", [("/api/embed", {"input": ""}), ("/v1/embeddings", {"input": [[]]})])
def test_empty_string_and_empty_token_list_400(server, backend, route, body):
    error_of(server.post(route, body), 400, "empty_input")


def test_some_empty_texts_among_others_are_embedded(server, backend):
    assert len(server.post("/api/embed", {"input": ["a", ""]}).json()["embeddings"]) == 2


# ---- models ---------------------------------------------------------------------------------
@pytest.mark.parametrize("route", list(POST_BODIES))
def test_unknown_model_404_before_the_backend(server, backend, route):
    body = {**POST_BODIES[route], "model": "nope"}
    assert "nope" in error_of(server.post(route, body), 404, "model_not_found")
    assert backend.calls == []


@pytest.mark.parametrize("route", EMBED_ROUTES)
def test_cross_encoder_cannot_embed(server, backend, route):
    error_of(server.post(route, {**embed_body(route, ["a"]), "model": "cross"}), 422, "unsupported")


# ---- backend errors -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "exc, status, kind, retry_after",
    [
        (errors.QueueFull("queue full", retry_after=2.0), 429, "queue_full", "2"),
        (errors.QueueFull("queue full", retry_after=0.2), 429, "queue_full", "1"),
        (errors.WorkerLost("worker 1 died"), 503, "worker_unavailable", None),
        (errors.DeadlineExceeded("too slow"), 504, "deadline_exceeded", None),
        (errors.InputTooLong("600 tokens > 512"), 422, "input_too_long", None),
        (errors.NotReady("loading", retry_after=3), 503, "not_ready", "3"),
        (errors.Draining("bye", retry_after=5), 503, "draining", "5"),
        (errors.ModelNotFound("gone"), 404, "model_not_found", None),
        (errors.Unsupported("no"), 422, "unsupported", None),
    ],
)
@pytest.mark.parametrize("route", list(POST_BODIES))
def test_backend_errors_are_mapped(server, backend, route, exc, status, kind, retry_after):
    backend.fail = exc
    r = server.post(route, POST_BODIES[route])
    assert error_of(r, status, kind) == exc.message
    assert r.headers.get("Retry-After") == retry_after


def test_unexpected_exception_is_500_with_a_log_line_and_no_traceback(server, backend, caplog):
    backend.fail = RuntimeError("secret internals")
    with caplog.at_level(logging.ERROR, logger="appliance.gateway"):
        r = server.post("/api/embed", {"input": "a"}, headers={"X-Request-ID": "boom-1"})
    assert "boom-1" in error_of(r, 500, "internal_error")
    assert b"Traceback" not in r.body and b"secret" not in r.body
    logged = [rec for rec in caplog.records if "boom-1" in rec.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None


def test_deadline_is_request_timeout_from_now(server, backend):
    server.post("/api/embed", {"input": "a"})
    assert TIMEOUT_S - 0.5 < backend.calls[0].remaining_s <= TIMEOUT_S


def test_a_backend_that_ignores_its_deadline_still_gets_504(start_server):
    server, backend = start_server(Config(request_timeout=0.2))
    backend.delay_s = 30.0
    started = time.monotonic()
    error_of(server.post("/api/embed", {"input": "a"}), 504, "deadline_exceeded")
    assert time.monotonic() - started < 5.0


# ---- headers --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "method, path, raw",
    [("POST", "/api/embed", b'{"input": "a"}'), ("GET", "/health", None), ("GET", "/nope", None), ("POST", "/api/embed", b"{")],
)
def test_request_id_is_echoed(server, backend, method, path, raw):
    r = server.request(method, path, raw=raw, headers={"X-Request-ID": "client-id-42"})
    assert r.headers["X-Request-ID"] == "client-id-42"


def test_request_id_is_generated_when_absent_or_unusable(server, backend):
    ids = [server.get("/health").headers["X-Request-ID"] for _ in range(3)]
    ids.append(server.get("/health", headers={"X-Request-ID": "x" * 500}).headers["X-Request-ID"])
    assert len(set(ids)) == 4
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)


def timing(header: str) -> dict[str, float]:
    parts = (p.split(";dur=") for p in header.split(","))
    return {name.strip(): float(ms) for name, ms in parts}


@pytest.mark.parametrize("route", list(POST_BODIES))
def test_worker_and_server_timing_headers(server, backend, route):
    backend.served_by = "0,1"
    r = server.post(route, POST_BODIES[route])
    assert r.headers["X-Worker-ID"] == "0,1"
    t = timing(r.headers["Server-Timing"])
    assert set(t) == {"queue", "tokenize", "inference", "total"}
    if route in EMBED_ROUTES:
        assert (t["queue"], t["tokenize"], t["inference"]) == (1.5, 0.25, 4.0)
    assert t["total"] > 0


def test_every_response_has_total_server_timing(server, backend):
    for r in (server.get("/health"), server.get("/nope"), server.post("/api/embed", raw=b"{")):
        assert timing(r.headers["Server-Timing"])["total"] >= 0


@pytest.mark.parametrize("hits, state, worker", [(0, "miss", "0"), (1, "partial", "0"), (3, "hit", "none")])
@pytest.mark.parametrize("route", EMBED_ROUTES)
def test_cache_header(server, backend, route, hits, state, worker):
    backend.cache_hits = hits
    r = server.post(route, embed_body(route, ["a", "b", "c"]))
    assert (r.headers["X-Cache"], r.headers["X-Worker-ID"]) == (state, worker)


def test_rerank_has_no_cache_header(server, backend):
    assert "X-Cache" not in server.post("/api/rerank", POST_BODIES["/api/rerank"]).headers


# ---- aiohttp's own errors -------------------------------------------------------------------
def test_unknown_route_is_json_404(server, backend):
    assert "/v2/nothing" in error_of(server.get("/v2/nothing"), 404, "not_found")


def test_wrong_method_is_json_405_with_allow(server, backend):
    r = server.get("/api/embed")
    error_of(r, 405, "method_not_allowed")
    assert r.headers["Allow"] == "POST"
    assert server.request("DELETE", "/health").headers["Allow"] in ("GET,HEAD", "HEAD,GET")
