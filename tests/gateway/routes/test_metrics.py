"""``GET /metrics`` (``gateway/routes/metrics.py``, ``gateway/prometheus.py``) and the traffic parts
of ``GET /stats`` over a real server against the in-test backend (``fake_backend.FakeBackend``):
the exposition parses with prometheus-client's own parser and passes ``promtool check metrics``,
every request is counted under its route template, the worker cards are exported as they are,
and the access rule is ``/stats``'s.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import msgspec
import pytest
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from appliance.protocol import BATCH_SIZE_BOUNDS, BATCH_TOKEN_BOUNDS
from gateway.admission import Admission, ApiKeys
from gateway.app import build_app
from gateway.backend import WorkerCard
from fake_backend import MAIN, TEST_CONFIG, FakeBackend, ServerThread

Start = Callable[..., tuple[ServerThread, FakeBackend]]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(server: ServerThread, headers: dict[str, str] | None = None) -> tuple[str, Samples]:
    reply = server.get("/metrics", headers=headers)
    assert reply.status == 200 and reply.headers["Content-Type"] == CONTENT_TYPE_LATEST
    text = reply.body.decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}  # fmt: skip
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def embed(server: ServerThread, texts: list[str]) -> int:
    return server.post("/api/embed", {"model": MAIN, "input": texts}).status


def test_metrics_parse_and_pass_promtool(start_server: Start, promtool_installed: str, tmp_path: Path) -> None:
    server, backend = start_server(TEST_CONFIG)
    backend.workers = lambda: busy_workers()  # type: ignore[method-assign]
    assert embed(server, ["a", "b"]) == 200
    assert server.post("/api/embed", {"model": MAIN, "input": 5}).status == 422
    assert server.get("/no/such/route").status == 404
    text, _ = scrape(server)
    (tmp_path / "metrics.txt").write_text(text)
    check = subprocess.run([promtool_installed, "check", "metrics"], input=text.encode(), capture_output=True,
                           timeout=60)  # fmt: skip
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()


def test_every_request_is_counted_under_its_route_template(start_server: Start) -> None:
    server, backend = start_server(TEST_CONFIG)
    for texts in (["a"], ["b", "c"], ["d"]):
        assert embed(server, texts) == 200
    server.post("/api/embed", {"model": MAIN, "input": 5})  # 422
    server.get("/v1/jobs/some-id")  # a templated path, no job service here: 404
    server.get("/no/such/route")  # 404
    server.request("DELETE", "/api/embed")  # 405
    server.get("/health")
    _, samples = scrape(server)
    requests = "appliance_requests_total"
    assert value(samples, requests, route="/api/embed", method="POST", status="200") == 3
    assert value(samples, requests, route="/api/embed", method="POST", status="422") == 1
    assert value(samples, requests, route="/v1/jobs/{job_id}", method="GET", status="404") == 1
    assert value(samples, requests, route="unmatched", method="GET", status="404") == 1
    assert value(samples, requests, route="unmatched", method="DELETE", status="405") == 1
    assert value(samples, requests, route="/health", method="GET", status="200") == 1
    assert value(samples, "appliance_inputs_total", route="/api/embed") == 4
    assert value(samples, "appliance_error_responses_total", type="invalid_field") == 1
    assert value(samples, "appliance_error_responses_total", type="method_not_allowed") == 1
    assert value(samples, "appliance_request_duration_seconds_count", route="/api/embed") == 4
    # the backend's stages (1.5 ms queue, 0.25 ms tokenize, 4 ms inference) for the 3 that reached it
    assert value(samples, "appliance_queue_seconds_count", route="/api/embed") == 3
    assert value(samples, "appliance_queue_seconds_sum", route="/api/embed") == pytest.approx(0.0045)
    assert value(samples, "appliance_inference_seconds_bucket", route="/api/embed", le="0.00316") == 0
    assert value(samples, "appliance_inference_seconds_bucket", route="/api/embed", le="0.01") == 3
    assert value(samples, "appliance_tokenize_seconds_sum", route="/api/embed") == pytest.approx(0.00075)


def test_worker_cards_are_exported_as_they_are(start_server: Start) -> None:
    server, backend = start_server(TEST_CONFIG)
    backend.workers = lambda: busy_workers()  # type: ignore[method-assign]
    _, samples = scrape(server)
    assert value(samples, "appliance_worker_info", worker="0", role="primary", device="cuda:0", pid="4242") == 1
    assert value(samples, "appliance_worker_state", worker="0", state="ready") == 1
    assert value(samples, "appliance_worker_state", worker="0", state="starting") == 0
    assert value(samples, "appliance_worker_state", worker="1", state="starting") == 1
    assert value(samples, "appliance_worker_up", worker="1") == 0
    assert value(samples, "appliance_worker_restarts_total", worker="0", cause="crash") == 2
    assert value(samples, "appliance_worker_restarts_total", worker="0", cause="recycle") == 1
    assert value(samples, "appliance_worker_restarts_total", worker="1", cause="heartbeat") == 0
    assert value(samples, "appliance_worker_resident_memory_bytes", worker="0") == 512 * 2**20
    assert value(samples, "appliance_worker_gpu_memory_bytes", worker="0") == 3 * 2**30
    assert value(samples, "appliance_worker_outstanding_inputs", worker="0") == 12
    assert value(samples, "appliance_worker_outstanding_tokens", worker="0") == 300
    assert value(samples, "appliance_worker_busy_ratio", worker="0") == 0.75
    assert value(samples, "appliance_worker_padded_tokens_total", worker="0") == 1500
    assert value(samples, "appliance_worker_tokens_total", worker="0") == 1000
    assert value(samples, "appliance_worker_padding_ratio", worker="0") == 1.5
    assert value(samples, "appliance_worker_compute_seconds_total", worker="0") == 2.5
    assert value(samples, "appliance_worker_batch_size_bucket", worker="0", le="1") == 1
    assert value(samples, "appliance_worker_batch_size_bucket", worker="0", le="32") == 9
    assert value(samples, "appliance_worker_batch_size_bucket", worker="0", le="+Inf") == 10
    assert value(samples, "appliance_worker_batch_size_count", worker="0") == 10
    assert value(samples, "appliance_worker_batch_size_sum", worker="0") == 170
    assert value(samples, "appliance_worker_batch_tokens_bucket", worker="0", le="256") == 4
    assert value(samples, "appliance_worker_batch_tokens_sum", worker="0") == 1500
    assert value(samples, "appliance_worker_batch_size_bucket", worker="1", le="+Inf") == 0  # none run yet
    assert value(samples, "appliance_queue_depth_inputs") == 12


def test_stats_fills_traffic_history_queue_depth_and_memory(start_server: Start) -> None:
    server, backend = start_server(TEST_CONFIG)
    backend.workers = lambda: busy_workers()  # type: ignore[method-assign]
    for texts in (["a"], ["b", "c"]):
        assert embed(server, texts) == 200
    server.post("/api/embed", {"model": MAIN, "input": 5})  # 422
    server.get("/health"), server.get("/metrics"), server.get("/stats")  # not traffic
    stats = server.get("/stats").json()
    one = stats["traffic"]["last_1m"]
    assert (one["requests"], one["inputs"], one["client_errors"], one["server_errors"]) == (3, 3, 1, 0)
    assert stats["traffic"]["last_5m"]["requests"] == 3 and one["p99_ms"] > 0
    assert len(stats["history"]) == 30 and stats["history"][-1]["requests"] == 3
    assert stats["history"][-1]["cache_misses"] == 3 and stats["history"][-1]["cache_hits"] == 0
    assert stats["queue_depth"] == 12
    memory = stats["memory"]
    # no guard in this app: a sample now, and the configured floor
    assert memory["total_bytes"] >= memory["available_bytes"] > 0
    assert memory["floor_bytes"] == TEST_CONFIG.memory_floor
    assert memory["headroom_bytes"] == memory["available_bytes"] - memory["floor_bytes"]
    assert [a["signal"] for a in stats["scaling"]] == ["worker_restarts"]  # worker 0 crashed twice


@pytest.mark.parametrize("path", ["/metrics", "/stats"])
def test_metrics_need_a_key_as_stats_does_and_are_not_rate_limited(start_server: Start, tmp_path: Path,
                                                                   path: str) -> None:  # fmt: skip
    keys = tmp_path / "keys"
    keys.write_text("secret-key\n")
    config = msgspec.structs.replace(TEST_CONFIG, rate_limit_rpm=1)
    server, _ = start_server(config, Admission(ApiKeys(str(keys)), rpm=1))
    assert server.get(path).status == 401
    auth = {"Authorization": "Bearer secret-key"}
    assert [server.get(path, headers=auth).status for _ in range(3)] == [200, 200, 200]
    assert server.get("/health").status == 200


def test_jobs_by_status_are_read_before_collecting(start_server: Start) -> None:
    """Without a job service there is no jobs family; with one (see the integration test) there is."""
    server, _ = start_server(TEST_CONFIG)
    text, _ = scrape(server)
    assert "appliance_jobs " not in text and "appliance_jobs{" not in text
    assert "appliance_start_time_seconds" in text and "process_cpu_seconds_total" in text


def busy_workers() -> list[WorkerCard]:
    size_counts = [1, 2, 4, 6, 8, 9, 10, 10, 10, 10]  # cumulative by BATCH_SIZE_BOUNDS, +Inf last
    token_counts = [2, 4, 8, 10, 10, 10, 10, 10, 10]
    assert len(size_counts) == len(BATCH_SIZE_BOUNDS) + 1 and len(token_counts) == len(BATCH_TOKEN_BOUNDS) + 1
    card: dict[str, Any] = dict(models=[MAIN], outstanding_tokens=300)
    return [WorkerCard(index=0, up=True, outstanding_inputs=12, pid=4242, role="primary", device="cuda:0", cores=[0, 1],
                       state="ready", restarts={"crash": 2, "recycle": 1}, busy_share=0.75, rss_bytes=512 * 2**20,
                       gpu_memory_bytes=3 * 2**30, batches=10, items=170, tokens=1000, padded_tokens=1500,
                       compute_us=2_500_000, batch_size_counts=size_counts, batch_token_counts=token_counts, **card),
            WorkerCard(index=1, up=False, outstanding_inputs=0, role="light", device="cpu", state="starting",
                       **card)]  # fmt: skip


def test_a_stream_is_recorded_once_it_has_sent_its_last_event(start_server: Start) -> None:
    server, _ = start_server(TEST_CONFIG)
    reply = server.post("/api/embed/stream", {"model": MAIN, "inputs": [["a", "b"], ["c"]]})
    assert reply.status == 200 and reply.body.rstrip().splitlines()[-2] == b"event: complete"
    _, samples = scrape(server)
    route = "/api/embed/stream"
    assert value(samples, "appliance_requests_total", route=route, method="POST", status="200") == 1
    assert value(samples, "appliance_inputs_total", route=route) == 3
    assert server.get("/stats").json()["traffic"]["last_1m"]["inputs"] == 3


def test_a_client_that_leaves_before_its_answer_is_counted_as_499(backend: FakeBackend) -> None:
    """With aiohttp's handler cancellation on, as the appliance runs it (``appliance/serving.py``)."""
    server = ServerThread(build_app(TEST_CONFIG, backend))
    server.runner = web.AppRunner(server.runner.app, handler_cancellation=True)
    server.start()
    try:
        backend.delay_s = 2.0
        body = json.dumps({"model": MAIN, "input": "slow"}).encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"POST /api/embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
            wait_until(lambda: bool(backend.calls))  # the handler is waiting on the backend
        backend.delay_s = 0.0
        wait_until(lambda: value(scrape(server)[1], "appliance_requests_total", route="/api/embed", method="POST",
                                 status="499") == 1)  # fmt: skip
        assert server.get("/stats").json()["traffic"]["last_1m"]["client_errors"] == 1
    finally:
        server.stop()


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
