"""The real appliance (subprocess, two workers, tiny random models) over real HTTP.

Every route of the HTTP API and the statuses it answers with, routing by role, and that no bad
input costs a worker.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import socket
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from harness import Appliance, get, post, serving

pytestmark = pytest.mark.slow

MAIN, STATIC, CROSS = "tiny", "tiny-static", "tiny-ce"


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory, tiny_transformer: Path, tiny_static: Path,
              tiny_cross_encoder: Path) -> Iterator[Appliance]:  # fmt: skip
    tmp = tmp_path_factory.mktemp("serve")
    models = [
        {"name": MAIN, "path": str(tiny_transformer), "main": True},
        {"name": STATIC, "path": str(tiny_static), "kind": "static"},
        {"name": CROSS, "path": str(tiny_cross_encoder), "kind": "cross_encoder"},
    ]
    limits = {"APPLIANCE_MAX_INPUTS": "64", "APPLIANCE_MAX_BODY_BYTES": "65536", "APPLIANCE_MAX_INPUT_CHARS": "5000"}
    with serving(tmp, models, workers=2, env=limits) as running:
        yield running


def embed(appliance: Appliance, body: dict) -> tuple[int, dict[str, str], dict]:
    return post(appliance.url + "/api/embed", body)


def test_health_ready_and_model_listing(appliance: Appliance) -> None:
    assert get(appliance.url + "/health")[0] == 200
    assert get(appliance.url + "/ready")[0] == 200
    status, _, listing = get(appliance.url + "/v1/models")
    assert status == 200
    by_name = {m["id"]: m for m in listing["data"]}
    assert set(by_name) == {MAIN, STATIC, CROSS}
    status, _, tags = get(appliance.url + "/api/tags")
    assert status == 200 and {m["name"] for m in tags["models"]} == {MAIN, STATIC, CROSS}


def test_ollama_embed_shapes_and_normalisation(appliance: Appliance) -> None:
    status, headers, body = embed(appliance, {"model": MAIN, "input": ["hello world", "a second text"]})
    assert status == 200, body
    vectors = np.array(body["embeddings"], dtype=np.float32)
    assert vectors.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert body["prompt_eval_count"] > 0 and body["total_duration"] > 0
    assert headers.get("X-Request-ID") and headers.get("X-Worker-ID") in {"0", "1"}
    assert "inference" in headers.get("Server-Timing", "")
    single = embed(appliance, {"model": MAIN, "input": "hello world"})[2]
    np.testing.assert_allclose(single["embeddings"][0], vectors[0], atol=1e-6)


def test_openai_float_base64_and_token_ids(appliance: Appliance) -> None:
    url = appliance.url + "/v1/embeddings"
    status, _, plain = post(url, {"model": MAIN, "input": ["alpha beta", "gamma"]})
    assert status == 200 and plain["object"] == "list" and len(plain["data"]) == 2
    assert plain["usage"]["prompt_tokens"] == plain["usage"]["total_tokens"] > 0
    status, _, packed = post(url, {"model": MAIN, "input": ["alpha beta", "gamma"], "encoding_format": "base64"})
    assert status == 200
    decoded = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(decoded, plain["data"][0]["embedding"], atol=1e-6)
    status, _, ids = post(url, {"model": MAIN, "input": [[2, 7, 9, 3]]})
    assert status == 200 and len(ids["data"][0]["embedding"]) == 32
    status, _, cut = post(url, {"model": MAIN, "input": "alpha beta", "dimensions": 8})
    assert status == 200 and len(cut["data"][0]["embedding"]) == 8


def test_batch_route_regroups(appliance: Appliance) -> None:
    status, _, body = post(appliance.url + "/api/embed/batch", {"model": MAIN, "inputs": [["a b", "c"], ["d e f"]]})
    assert status == 200, body
    assert [len(b) for b in body["batches"]] == [2, 1]
    assert set(body["cache_stats"]) >= {"hits", "misses", "hit_rate"}


def test_rerank_bi_encoder_and_cross_encoder(appliance: Appliance) -> None:
    docs = ["hello world", "completely unrelated words here", "hello there world"]
    for model in (MAIN, STATIC, CROSS):
        status, _, body = post(appliance.url + "/api/rerank", {"model": model, "query": "hello world", "documents": docs})
        assert status == 200, body
        scores = [r["score"] for r in body["results"]]
        assert sorted(scores, reverse=True) == scores and len(scores) == 3
    status, _, body = post(appliance.url + "/v1/rerank", {"model": MAIN, "query": "hello world", "documents": docs,
                                                          "top_n": 2, "return_documents": True})  # fmt: skip
    assert status == 200 and len(body["results"]) == 2
    assert body["results"][0]["index"] == 0 and body["results"][0]["document"]["text"] == "hello world"


def test_non_main_models_are_served_by_the_primary_only(appliance: Appliance) -> None:
    for i in range(8):  # distinct texts: a cache hit would be served by no worker at all
        status, headers, _ = embed(appliance, {"model": STATIC, "input": f"static text {i}"})
        assert status == 200 and headers["X-Worker-ID"] == "0"


def test_main_model_load_spreads_over_both_workers(appliance: Appliance) -> None:
    def one(i: int) -> str:
        status, headers, _ = embed(appliance, {"model": MAIN, "input": [f"text number {i} " * 20] * 4})
        assert status == 200
        return headers["X-Worker-ID"]

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        seen = set(pool.map(one, range(200)))
    assert {"0", "1"} <= {w for ids in seen for w in ids.split(",")}


BAD_REQUESTS = [
    ("/api/embed", b'{"model": "tiny", "input": ["x"', 400, "malformed_json"),
    ("/api/embed", {"model": MAIN, "input": ""}, 400, "empty_input"),
    ("/api/embed", {"model": MAIN, "input": []}, 400, "empty_input"),
    ("/api/embed", {"model": "nope", "input": "x"}, 404, "model_not_found"),
    ("/api/embed", {"model": MAIN, "input": 5}, 422, None),
    ("/api/embed", {"model": MAIN, "input": ["ok", 7]}, 422, None),
    ("/api/embed", {"model": MAIN, "input": ["x"] * 65}, 422, "too_many_inputs"),
    ("/api/embed", {"model": MAIN, "input": "y" * 5001}, 422, "input_too_long"),
    ("/api/embed", {"model": MAIN, "input": "word " * 400, "truncate": False}, 422, "input_too_long"),
    ("/v1/embeddings", {"model": MAIN, "input": "x", "encoding_format": "hex"}, 422, None),
    ("/v1/embeddings", {"model": MAIN, "input": "x", "dimensions": 0}, 422, None),
    ("/v1/embeddings", {"model": MAIN, "input": [[1, 999999]]}, 422, None),
    ("/api/rerank", {"model": MAIN, "query": "q"}, 422, None),
    ("/v1/rerank", {"model": "nope", "query": "q", "documents": ["d"]}, 404, "model_not_found"),
    ("/api/embed", {"model": CROSS, "input": "x"}, 422, None),
]


@pytest.mark.parametrize(("route", "body", "status", "kind"), BAD_REQUESTS)
def test_bad_input_gets_a_clear_error(appliance: Appliance, route: str, body: object, status: int,
                                      kind: str | None) -> None:  # fmt: skip
    got, _, payload = post(appliance.url + route, body)
    assert got == status, payload
    assert set(payload["error"]) == {"message", "type", "code"} and payload["error"]["code"] == status
    if kind:
        assert payload["error"]["type"] == kind
    assert payload["error"]["message"]


def test_wrong_type_names_the_field(appliance: Appliance) -> None:
    status, _, payload = embed(appliance, {"model": MAIN, "input": ["ok", 7]})
    assert status == 422 and "input" in payload["error"]["message"]
    status, _, payload = embed(appliance, {"model": MAIN, "input": "x", "truncate": "yes"})
    assert status == 422 and "truncate" in payload["error"]["message"]


def test_huge_body_is_413_with_and_without_content_length(appliance: Appliance) -> None:
    big = json.dumps({"model": MAIN, "input": ["z" * 1000] * 100}).encode()
    assert post(appliance.url + "/api/embed", big)[0] == 413
    host, port = appliance.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        chunk = big[:70000]
        sock.sendall(b"POST /api/embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(chunk):x}\r\n".encode() + chunk +
                     b"\r\n0\r\n\r\n")  # fmt: skip
        head = sock.recv(4096).decode(errors="replace")
    assert head.startswith("HTTP/1.1 413"), head[:200]


def test_bad_input_never_kills_a_worker(appliance: Appliance) -> None:
    before = sorted(appliance.worker_pids())
    for route, body, _, _ in BAD_REQUESTS:
        post(appliance.url + route, body)
    assert sorted(appliance.worker_pids()) == before
    assert embed(appliance, {"model": MAIN, "input": "still alive"})[0] == 200
