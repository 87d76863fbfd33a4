"""``gateway/routes/stream.py``: ``POST /api/embed/stream`` over a real server against the in-test
backend (``fake_backend.FakeBackend``), with small chunks (``CHUNK_INPUTS`` patched) so that the
16 inputs the test config allows make several: the event order, every index exactly once,
results in completion order, at most ``CHUNKS_IN_FLIGHT`` chunks at once, failures as ``error``
events while the stream goes on, heartbeats, and the ordinary JSON errors before it starts.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from typing import Any

import numpy as np
import pytest

from appliance.config import Config
from gateway import errors
from gateway.routes import stream
from http_checks import error_of, f32
from test_batch import refuse

ROUTE = "/api/embed/stream"
TEXTS = [f"text {i}" for i in range(10)]


def events(body: bytes) -> list[tuple[str, Any]]:
    """(event name, decoded data) per SSE event of a whole body; a comment is ("comment", text)."""
    out: list[tuple[str, Any]] = []
    for block in body.decode().split("\n\n"):
        if block.startswith(":"):
            out.append(("comment", block[1:].strip()))
        elif block:
            fields = dict(line.split(": ", 1) for line in block.split("\n"))
            out.append((fields["event"], json.loads(fields["data"])))
    return out


def indices(evts: list[tuple[str, Any]]) -> list[int]:
    """Every index the stream answered, as result or as error, in the order they came."""
    found: list[int] = []
    for name, data in evts:
        if name == "result":
            found += [item["index"] for item in data]
        elif name == "error":
            found.append(data["index"])
    return found


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(stream, "CHUNK_INPUTS", 3)


def test_stream_events_cover_every_input_once_and_complete_last(server, backend):
    r = server.post(ROUTE, {"model": "mini", "inputs": [TEXTS[:4], [], TEXTS[4:]]}, headers={"X-Request-ID": "s-1"})
    assert r.status == 200 and r.headers["Content-Type"] == "text/event-stream"
    assert r.headers["X-Request-ID"] == "s-1" and r.headers["Cache-Control"] == "no-cache"
    evts = events(r.body)
    assert sorted(indices(evts)) == list(range(10))
    assert [name for name, _ in evts].count("result") == 4  # chunks of 3: 3 + 3 + 3 + 1
    name, complete = evts[-1]
    assert name == "complete" and (complete["total"], complete["failed"]) == (10, 0)
    assert set(complete) == {"total", "failed", "duration_ms"} and complete["duration_ms"] >= 0
    vectors = {item["index"]: item["embedding"] for name, data in evts if name == "result" for item in data}
    np.testing.assert_array_equal(f32([vectors[i] for i in range(10)]), backend.vectors_for("mini", TEXTS))
    assert sorted(c.inputs for c in backend.calls) == sorted([TEXTS[0:3], TEXTS[3:6], TEXTS[6:9], TEXTS[9:]])


def test_progress_follows_each_chunk(server, backend):
    evts = events(server.post(ROUTE, {"inputs": [TEXTS]}).body)
    names = [name for name, _ in evts]
    assert names == ["result", "progress"] * 4 + ["complete"]
    progress = [data for name, data in evts if name == "progress"]
    done = [p["done"] for p in progress]  # chunks of 3 and one of 1, in whatever order they finished
    assert done == sorted(done) and done[-1] == 10 and {b - a for a, b in zip([0, *done], done)} <= {1, 3}
    assert all(p["total"] == 10 and p["failed"] == 0 for p in progress)


def test_results_come_in_completion_order_with_a_bounded_number_in_flight(server, backend, monkeypatch):
    real, running, most = backend.embed, [0], [0]

    async def embed(model, inputs, **options):
        running[0] += 1
        most[0] = max(most[0], running[0])
        try:
            await asyncio.sleep(0.3 if "text 0" in inputs else 0.02)  # the first chunk is the slowest
            return await real(model, inputs, **options)
        finally:
            running[0] -= 1

    monkeypatch.setattr(backend, "embed", embed)
    evts = events(server.post(ROUTE, {"inputs": [TEXTS]}).body)
    chunks = [[item["index"] for item in data] for name, data in evts if name == "result"]
    assert chunks[-1] == [0, 1, 2] and sorted(indices(evts)) == list(range(10))
    assert most[0] == stream.CHUNKS_IN_FLIGHT


def test_refused_inputs_are_error_events_and_the_stream_goes_on(server, backend, monkeypatch):
    refuse(backend, monkeypatch)
    texts = ["a", "long 1", "b", "", "c", "bad 5", "d"]
    evts = events(server.post(ROUTE, {"inputs": [texts]}).body)
    failures = {data["index"]: data for name, data in evts if name == "error"}
    assert {i: f["type"] for i, f in failures.items()} == {1: "input_too_long", 3: "empty_input", 5: "invalid_field"}
    assert failures[5]["message"].endswith("(input 5)")  # its place in the request, not in its chunk
    assert set(failures[1]) == {"index", "type", "message"}
    served = {item["index"]: item["embedding"] for name, data in evts if name == "result" for item in data}
    assert sorted(served) == [0, 2, 4, 6]
    np.testing.assert_array_equal(f32([served[i] for i in (0, 2, 4, 6)]), backend.vectors_for("mini", list("abcd")))
    assert evts[-1] == ("complete", {**evts[-1][1], "total": 7, "failed": 3})
    assert sorted(indices(evts)) == list(range(7))


def test_a_failed_chunk_fails_its_inputs_only(server, backend, monkeypatch):
    real = backend.embed

    async def embed(model, inputs, **options):
        if "text 3" in inputs:
            raise errors.QueueFull("worker queue full; retry", retry_after=1.0)
        return await real(model, inputs, **options)

    monkeypatch.setattr(backend, "embed", embed)
    evts = events(server.post(ROUTE, {"inputs": [TEXTS]}).body)
    failures = [data for name, data in evts if name == "error"]
    assert [(f["index"], f["type"]) for f in failures] == [(3, "queue_full"), (4, "queue_full"), (5, "queue_full")]
    assert sorted(indices(evts)) == list(range(10))
    assert evts[-1][0] == "complete" and evts[-1][1]["failed"] == 3


def test_heartbeats_while_nothing_is_ready(server, backend, monkeypatch):
    monkeypatch.setattr(stream, "HEARTBEAT_S", 0.05)
    backend.delay_s = 0.4
    r = server.post(ROUTE, {"inputs": [TEXTS[:2]]})
    assert b": keep-alive\n\n" in r.body
    evts = events(r.body)
    assert evts[0] == ("comment", "keep-alive")
    assert [name for name, _ in evts if name != "comment"] == ["result", "progress", "complete"]


@pytest.mark.parametrize(
    "body, status, kind",
    [
        ({"inputs": "not groups"}, 422, "invalid_field"),
        ({"model": "nope", "inputs": [["a"]]}, 404, "model_not_found"),
        ({"model": "cross", "inputs": [["a"]]}, 422, "unsupported"),
        ({"inputs": [["a"] * 17]}, 422, "too_many_inputs"),
        ({"inputs": [[""]]}, 400, "empty_input"),
    ],
)
def test_errors_before_the_stream_are_json(server, backend, body, status, kind):
    error_of(server.post(ROUTE, body), status, kind)
    assert backend.calls == []


def test_not_ready_and_malformed_are_json(server, backend):
    error_of(server.post(ROUTE, raw=b"{not json"), 400, "malformed_json")
    backend.ready = False
    r = server.post(ROUTE, {"inputs": [["a"]]})
    error_of(r, 503, "not_ready")
    assert r.headers["Retry-After"] == "5" and "X-Request-ID" in r.headers


def test_key_and_rate_refusals_are_json(start_server, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("secret-key\n")
    gateway, _ = start_server(Config(api_keys_file=str(keys), rate_limit_rpm=1))
    error_of(gateway.post(ROUTE, {"inputs": [["a"]]}), 401, "unauthorized")
    key = {"Authorization": "Bearer secret-key"}
    assert gateway.post(ROUTE, {"inputs": [["a"]]}, headers=key).status == 200
    refused = gateway.post(ROUTE, {"inputs": [["a"]]}, headers=key)
    error_of(refused, 429, "rate_limited")
    assert int(refused.headers["Retry-After"]) >= 1


def test_a_client_that_leaves_stops_the_chunks_not_yet_started(server, backend, monkeypatch):
    monkeypatch.setattr(stream, "CHUNK_INPUTS", 1)
    backend.delay_s = 0.3
    texts = [f"leave {i}" for i in range(16)]  # 16 chunks: about two seconds when read to the end
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("POST", ROUTE, body=json.dumps({"inputs": [texts]}), headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200
    assert response.readline().startswith(b"event: ")  # the first chunk's answer has come
    conn.close()
    time.sleep(1.5)
    assert len(backend.calls) < len(texts)
    assert server.get("/health").status == 200
