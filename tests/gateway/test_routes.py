"""The HTTP contract (``docs/architecture.md``) against an in-test Backend: every route, shape, status
and header, and the real ``openai`` and ``ollama`` clients, unchanged, against a real server.

The backend (``conftest.FakeBackend``) returns unit vectors seeded by a hash of each input, so
every number that comes back can be checked exactly. Limits come from ``TEST_CONFIG``: 64 KiB
bodies, 16 inputs, 1000 characters, 2 s deadline.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from typing import Any

import numpy as np
import ollama
import openai
import pytest

from appliance.config import Config
from gateway import errors

MAX_BODY, MAX_INPUTS, MAX_CHARS, TIMEOUT_S = 64 * 1024, 16, 1000, 2.0
EMBED_ROUTES = ["/api/embed", "/v1/embeddings", "/api/embed/batch"]
POST_BODIES: dict[str, dict[str, Any]] = {
    "/api/embed": {"model": "mini", "input": ["alpha"]},
    "/v1/embeddings": {"model": "mini", "input": ["alpha"]},
    "/api/embed/batch": {"model": "mini", "inputs": [["alpha"]]},
    "/api/rerank": {"model": "mini", "query": "q", "documents": ["alpha"]},
    "/v1/rerank": {"model": "mini", "query": "q", "documents": ["alpha"]},
}
NUMBER = re.compile(rb"-?\d+\.\d+(?:e[-+]?\d+)?|-?\d+e[-+]?\d+")


def f32(rows: Any) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32)


def error_of(reply: Any, status: int, kind: str) -> str:
    """Assert the JSON error shape; return its message."""
    assert reply.status == status, reply.body
    assert reply.headers["Content-Type"].startswith("application/json")
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "code"}
    assert (error["type"], error["code"]) == (kind, status)
    return str(error["message"])


def embed_body(route: str, texts: list[Any], **extra: Any) -> dict[str, Any]:
    key, value = ("inputs", [texts]) if route.endswith("batch") else ("input", texts)
    return {"model": "mini", key: value, **extra}


def vectors_of(route: str, doc: dict[str, Any]) -> np.ndarray:
    if route == "/api/embed":
        return f32(doc["embeddings"])
    if route == "/v1/embeddings":
        return f32([d["embedding"] for d in doc["data"]])
    return f32([v for group in doc["batches"] for v in group])


# ---- Ollama /api/embed ----------------------------------------------------------------------
def test_ollama_embed_returns_one_vector_per_input_in_order(server, backend):
    texts = ["alpha", "beta", "alpha"]
    r = server.post("/api/embed", {"model": "mini", "input": texts})
    doc = r.json()
    assert r.status == 200
    assert set(doc) == {"model", "embeddings", "total_duration", "load_duration", "prompt_eval_count"}
    assert doc["model"] == "mini"
    np.testing.assert_array_equal(f32(doc["embeddings"]), backend.vectors_for("mini", texts))
    assert doc["prompt_eval_count"] == sum(len(t) + 2 for t in texts)
    assert isinstance(doc["total_duration"], int) and 0 < doc["total_duration"] < 10**10
    assert doc["load_duration"] == 0
    assert [c.inputs for c in backend.calls] == [texts]


def test_ollama_single_string_and_truncate_flag(server, backend):
    r = server.post("/api/embed", {"model": "mini", "input": "alpha"})
    np.testing.assert_array_equal(f32(r.json()["embeddings"]), backend.vectors_for("mini", ["alpha"]))
    server.post("/api/embed", {"model": "mini", "input": "alpha", "truncate": False})
    assert [(c.inputs, c.truncate) for c in backend.calls] == [(["alpha"], True), (["alpha"], False)]


def test_vectors_print_as_float32_not_double(server, backend):
    body = server.post("/api/embed", {"model": "mini", "input": ["alpha", "beta"]}).body
    numbers = NUMBER.findall(body)
    expected = backend.vectors_for("mini", ["alpha", "beta"]).ravel()
    assert len(numbers) == expected.size
    # str() of a numpy float32 is its shortest round-tripping decimal; the double repr differs
    assert [float(n) for n in numbers] == [float(str(x)) for x in expected]


def test_model_left_out_is_the_main_model_and_latest_tag_is_accepted(server, backend):
    assert server.post("/api/embed", {"input": "a"}).json()["model"] == "mini"
    assert server.post("/api/embed", {"model": "static:latest", "input": "a"}).json()["model"] == "static"
    assert [c.model for c in backend.calls] == ["mini", "static"]
    assert len(server.post("/api/embed", {"model": "static", "input": "a"}).json()["embeddings"][0]) == 6


# ---- OpenAI /v1/embeddings ------------------------------------------------------------------
def test_openai_float_shape(server, backend):
    r = server.post("/v1/embeddings", {"model": "mini", "input": ["alpha", "beta"], "user": "u1"})
    doc = r.json()
    assert r.status == 200
    assert set(doc) == {"object", "data", "model", "usage"}
    assert (doc["object"], doc["model"]) == ("list", "mini")
    assert [(d["object"], d["index"]) for d in doc["data"]] == [("embedding", 0), ("embedding", 1)]
    np.testing.assert_array_equal(vectors_of("/v1/embeddings", doc), backend.vectors_for("mini", ["alpha", "beta"]))
    assert doc["usage"] == {"prompt_tokens": 13, "total_tokens": 13}


def test_openai_base64_is_raw_little_endian_float32(server, backend):
    r = server.post("/v1/embeddings", {"model": "mini", "input": ["alpha", "beta"], "encoding_format": "base64"})
    rows = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in r.json()["data"]]
    np.testing.assert_array_equal(np.stack(rows), backend.vectors_for("mini", ["alpha", "beta"]))


@pytest.mark.parametrize(
    "given, sent",
    [
        ([101, 2023, 102], [[101, 2023, 102]]),  # one token-id list is one input
        ([[101, 102], [7]], [[101, 102], [7]]),
        ("text", ["text"]),
    ],
)
def test_openai_input_forms(server, backend, given, sent):
    r = server.post("/v1/embeddings", {"model": "mini", "input": given})
    assert r.status == 200
    assert len(r.json()["data"]) == len(sent)
    assert backend.calls[-1].inputs == sent


@pytest.mark.parametrize(
    "given, path",
    [(["a", 1], "$.input"), ([[1], "a"], "$.input"), ([-1], "$.input[0]"), ([[1, "x"]], "$.input[0][1]")],
)
def test_openai_mixed_or_invalid_inputs_422(server, backend, given, path):
    r = server.post("/v1/embeddings", {"model": "mini", "input": given})
    assert path in error_of(r, 422, "invalid_field")
    assert backend.calls == []


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


# ---- /api/embed/batch -----------------------------------------------------------------------
def test_batch_is_one_backend_call_regrouped(server, backend):
    groups = [["a", "b"], [], ["c", "a", "d"]]
    r = server.post("/api/embed/batch", {"model": "mini", "inputs": groups, "batch_size": 2})
    doc = r.json()
    assert r.status == 200 and set(doc) == {"model", "batches", "cache_stats"}
    assert [c.inputs for c in backend.calls] == [["a", "b", "c", "a", "d"]]
    assert [len(g) for g in doc["batches"]] == [2, 0, 3]
    for group, got in zip(groups, doc["batches"]):
        if group:
            np.testing.assert_array_equal(f32(got), backend.vectors_for("mini", group))
    assert doc["cache_stats"] == {"hits": 0, "misses": 5, "hit_rate": 0.0}


def test_batch_cache_stats_and_header(server, backend):
    backend.cache_hits = 2
    r = server.post("/api/embed/batch", {"inputs": [["a", "b"], ["c", "d", "e"]]})
    assert r.json()["cache_stats"] == {"hits": 2, "misses": 3, "hit_rate": 0.4}
    assert r.headers["X-Cache"] == "partial"


def test_batch_limits_count_every_group(server, backend):
    r = server.post("/api/embed/batch", {"inputs": [["x"] * 6] * 3})
    assert "18" in error_of(r, 422, "too_many_inputs")


# ---- rerank ---------------------------------------------------------------------------------
def expected_order(backend: Any, query: str, docs: list[str]) -> list[int]:
    scores = backend.vectors_for("mini", docs) @ backend.vectors_for("mini", [query])[0]
    return list(np.argsort(-scores, kind="stable"))


def test_api_rerank_sorted_by_score_with_top_k(server, backend):
    docs = [f"document {i}" for i in range(7)]
    r = server.post("/api/rerank", {"model": "mini", "query": "which one?", "documents": docs, "top_k": 4})
    doc = r.json()
    assert r.status == 200 and doc["model"] == "mini"
    assert [x["index"] for x in doc["results"]] == expected_order(backend, "which one?", docs)[:4]
    assert [x["document"] for x in doc["results"]] == [docs[x["index"]] for x in doc["results"]]
    scores = [x["score"] for x in doc["results"]]
    assert scores == sorted(scores, reverse=True)
    all_docs = server.post("/api/rerank", {"query": "which one?", "documents": docs}).json()["results"]
    assert len(all_docs) == 7


def test_cohere_rerank_shape(server, backend):
    docs: list[Any] = ["red apple", {"text": "green pear", "title": "ignored"}, "blue sky"]
    texts = ["red apple", "green pear", "blue sky"]
    r = server.post(
        "/v1/rerank", {"model": "mini", "query": "fruit", "documents": docs, "top_n": 2}, headers={"X-Request-ID": "rr-1"}
    )
    doc = r.json()
    assert r.status == 200 and set(doc) == {"id", "results", "meta"}
    assert doc["id"] == "rr-1"
    assert [x["index"] for x in doc["results"]] == expected_order(backend, "fruit", texts)[:2]
    assert all(set(x) == {"index", "relevance_score"} for x in doc["results"])
    assert doc["meta"]["tokens"]["input_tokens"] == sum(len("fruit") + len(t) + 3 for t in texts)
    assert backend.calls[-1].inputs == ["fruit", *texts]
    with_docs = server.post("/v1/rerank", {"query": "fruit", "documents": docs, "return_documents": True}).json()
    assert [x["document"] for x in with_docs["results"]] == [{"text": texts[x["index"]]} for x in with_docs["results"]]


@pytest.mark.parametrize("route", ["/api/rerank", "/v1/rerank"])
@pytest.mark.parametrize(
    "query, documents, status, kind",
    [
        ("", ["a"], 400, "empty_input"),
        ("q", [], 400, "empty_input"),
        ("q", ["", ""], 400, "empty_input"),
        ("q", ["d"] * (MAX_INPUTS + 1), 422, "too_many_inputs"),
        ("q", ["d", "x" * (MAX_CHARS + 1)], 422, "input_too_long"),
        ("x" * (MAX_CHARS + 1), ["d"], 422, "input_too_long"),
    ],
)
def test_rerank_limits(server, backend, route, query, documents, status, kind):
    error_of(server.post(route, {"query": query, "documents": documents}), status, kind)
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


def test_cross_encoder_reranks(server, backend):
    assert server.post("/v1/rerank", {"model": "cross", "query": "q", "documents": ["a"]}).status == 200
    assert backend.calls[-1].model == "cross"


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


# ---- readiness ------------------------------------------------------------------------------
@pytest.mark.parametrize("ready, draining", [(True, False), (False, False), (True, True), (False, True)])
def test_health_is_200_while_the_process_is_up(server, backend, ready, draining):
    backend.ready, backend.draining = ready, draining
    r = server.get("/health")
    assert (r.status, r.json()) == (200, {"status": "ok"})


def test_ready(server, backend):
    assert (server.get("/ready").status, server.get("/ready").json()) == (200, {"status": "ready"})
    backend.ready = False
    r = server.get("/ready")
    error_of(r, 503, "not_ready")
    assert int(r.headers["Retry-After"]) >= 1
    backend.ready, backend.draining = True, True
    error_of(server.get("/ready"), 503, "draining")


@pytest.mark.parametrize("route", list(POST_BODIES))
@pytest.mark.parametrize("flags, kind", [({"ready": False}, "not_ready"), ({"draining": True}, "draining")])
def test_work_is_refused_while_not_ready_or_draining(server, backend, route, flags, kind):
    backend.__dict__.update(flags)
    r = server.post(route, POST_BODIES[route])
    error_of(r, 503, kind)
    assert int(r.headers["Retry-After"]) >= 1
    assert backend.calls == []


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


# ---- model lists ----------------------------------------------------------------------------
def test_openai_model_list(server, backend):
    doc = server.get("/v1/models").json()
    assert doc["object"] == "list"
    assert [(m["id"], m["object"], m["dimensions"], m["kind"]) for m in doc["data"]] == [
        ("mini", "model", 8, "transformer"),
        ("static", "model", 6, "static"),
        ("cross", "model", 0, "cross_encoder"),
    ]
    first = doc["data"][0]
    assert (first["max_length"], first["workers"], first["main"], first["owned_by"]) == (128, [0, 1], True, "appliance")
    assert isinstance(first["created"], int)


def test_ollama_tags(server, backend):
    doc = server.get("/api/tags").json()
    assert [(m["name"], m["model"], m["dimensions"], m["workers"]) for m in doc["models"]] == [
        ("mini", "mini", 8, [0, 1]),
        ("static", "static", 6, [0]),
        ("cross", "cross", 0, [0]),
    ]
    assert doc["models"][0]["details"]["family"] == "transformer"


# ---- the real clients, unchanged ------------------------------------------------------------
def openai_client(server: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=10)


def test_openai_sdk_default_is_base64(server, backend):
    raw = openai_client(server).embeddings.with_raw_response.create(model="mini", input=["alpha", "beta"])
    assert json.loads(raw.http_request.content)["encoding_format"] == "base64"
    assert isinstance(json.loads(raw.content)["data"][0]["embedding"], str)
    result = raw.parse()
    np.testing.assert_array_equal(f32([d.embedding for d in result.data]), backend.vectors_for("mini", ["alpha", "beta"]))
    assert (result.usage.prompt_tokens, result.model) == (13, "mini")


def test_openai_sdk_float_and_dimensions(server, backend):
    client = openai_client(server)
    result = client.embeddings.create(model="mini", input="alpha", encoding_format="float")
    np.testing.assert_array_equal(f32([result.data[0].embedding]), backend.vectors_for("mini", ["alpha"]))
    assert len(client.embeddings.create(model="mini", input="alpha", dimensions=4).data[0].embedding) == 4


def test_openai_sdk_sees_typed_errors(server, backend):
    with pytest.raises(openai.NotFoundError):
        openai_client(server).embeddings.create(model="nope", input="alpha")
    backend.fail = errors.QueueFull("full", retry_after=1)
    with pytest.raises(openai.RateLimitError):
        openai_client(server).embeddings.create(model="mini", input="alpha")


def test_ollama_client_embed_and_list(server, backend):
    client = ollama.Client(host=server.url)
    result = client.embed(model="mini", input=["alpha", "beta"])
    np.testing.assert_array_equal(f32(result.embeddings), backend.vectors_for("mini", ["alpha", "beta"]))
    assert (result.model, result.prompt_eval_count) == ("mini", 13)
    assert len(client.embed(model="mini", input="alpha", dimensions=5).embeddings[0]) == 5
    assert [m.model for m in client.list().models] == ["mini", "static", "cross"]
    with pytest.raises(ollama.ResponseError) as raised:
        client.embed(model="nope", input="alpha")
    assert raised.value.status_code == 404
