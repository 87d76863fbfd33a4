"""bench/batching.py: the workers' counters read from a real HTTP /metrics, summed over workers,
and the batching figures between two reads."""

from __future__ import annotations

import asyncio
import threading
from typing import Iterator

import pytest
from aiohttp import web

from bench import batching

# what the gateway's /metrics says (gateway/prometheus.py names), with look-alikes that must not count
METRICS = """# HELP appliance_worker_batches_total Batches the worker ran
# TYPE appliance_worker_batches_total counter
appliance_worker_batches_total{worker="0"} 10.0
appliance_worker_batches_total{worker="1"} 30.0
appliance_worker_batch_inputs_total{worker="0"} 50.0
appliance_worker_batch_inputs_total{worker="1"} 150.0
appliance_worker_tokens_total{worker="0"} 1000.0
appliance_worker_tokens_total{worker="1"} 3000.0
appliance_worker_padded_tokens_total{worker="0"} 1500.0
appliance_worker_padded_tokens_total{worker="1"} 4500.0
appliance_worker_compute_seconds_total{worker="0"} 1.0
appliance_worker_compute_seconds_total{worker="1"} 3.0
appliance_worker_batch_size_bucket{le="8.0",worker="0"} 10.0
appliance_worker_padding_ratio{worker="0"} 1.5
appliance_model_tokens_total{model="m"} 99999.0
appliance_request_duration_seconds_sum{route="/api/embed"} 1.5
appliance_request_duration_seconds_count{route="/api/embed"} 100.0
appliance_request_duration_seconds_sum{route="/metrics"} 0.5
appliance_request_duration_seconds_count{route="/metrics"} 2.0
appliance_inference_seconds_sum{route="/api/embed"} 0.9
appliance_inference_seconds_count{route="/api/embed"} 100.0
appliance_inference_seconds_bucket{le="0.01",route="/api/embed"} 50.0
"""


@pytest.fixture
def metrics_url() -> Iterator[str]:
    """A real HTTP server answering METRICS on GET /metrics, in a thread of its own."""
    started, stop = threading.Event(), None
    url = ""

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=METRICS)

    async def serve() -> None:
        nonlocal stop, url
        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        stop = asyncio.Event()
        started.set()
        try:
            await asyncio.wait_for(stop.wait(), 60)
        finally:
            await runner.cleanup()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10), "the /metrics server did not start"
    try:
        yield url
    finally:
        loop.call_soon_threadsafe(stop.set)  # type: ignore[union-attr]
        thread.join(10)


def test_counters_are_read_and_summed_over_workers(metrics_url: str) -> None:
    assert batching.read_counters(metrics_url, {}) == {
        "batches": 40.0, "batch_inputs": 200.0, "tokens": 4000.0, "padded_tokens": 6000.0, "compute_seconds": 4.0,
        "request_duration_sum@/api/embed": 1.5, "request_duration_count@/api/embed": 100.0,
        "request_duration_sum@/metrics": 0.5, "request_duration_count@/metrics": 2.0,
        "inference_sum@/api/embed": 0.9, "inference_count@/api/embed": 100.0,
    }  # fmt: skip


def test_the_figures_between_two_reads() -> None:
    before = {"batches": 40.0, "batch_inputs": 200.0, "tokens": 4000.0, "padded_tokens": 6000.0,
              "compute_seconds": 4.0, "request_duration_sum@/metrics": 0.5,
              "request_duration_count@/metrics": 2.0}  # fmt: skip
    after = {"batches": 60.0, "batch_inputs": 360.0, "tokens": 6000.0, "padded_tokens": 8500.0,
             "compute_seconds": 5.0, "request_duration_sum@/metrics": 0.6, "request_duration_count@/metrics": 3.0,
             "request_duration_sum@/api/embed": 1.5, "request_duration_count@/api/embed": 100.0,
             "inference_sum@/api/embed": 0.9, "inference_count@/api/embed": 100.0,
             "queue_sum@/api/embed": 0.0, "queue_count@/api/embed": 0.0}  # fmt: skip
    figures = batching.between(before, after)
    # the route with the most requests in between; a stage no request reached is left out
    assert figures == batching.Batching(20, 8.0, 1.25, 50.0, {"request_duration": 15.0, "inference": 9.0})
    line = figures.line(16.0)
    assert "20 batches, 8.0 inputs each, padding 1.25x" in line
    assert "client 16.00, request_duration 15.00, inference 9.00" in line
    assert batching.between(before, before) == batching.Batching(0, 0.0, 0.0, 0.0, {})  # an idle point
