"""``/metrics`` and ``/stats`` on the real appliance (subprocess, two workers, the tiny random
model), step by step: a miss, a hit, a burst of identical concurrent requests, a 422, a worker
SIGKILLed and respawned, a 429 from the rate limit. After each step every counter that step
should move has moved by exactly what it should, in both views; the exposition passes
``promtool check metrics`` at the end. One test: the steps build on each other's counts.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import Appliance, get, post, serving

pytestmark = pytest.mark.slow

MODEL = "tiny"
ROUTE = "/api/embed"
RATE_LIMIT_RPM = 120  # room for every step; the last one spends the rest to meet a 429
BURST = 64
RESPAWN_TIMEOUT_S = 90.0

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Readout:
    """One scrape of ``/metrics`` and one read of ``/stats``, taken together."""

    def __init__(self, appliance: Appliance) -> None:
        with urllib.request.urlopen(appliance.url + "/metrics", timeout=10) as response:
            self.text = response.read().decode()
        self.samples: Samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                                 for family in text_string_to_metric_families(self.text)
                                 for s in family.samples}  # fmt: skip
        status, _, self.stats = get(appliance.url + "/stats")
        assert status == 200

    def metric(self, name: str, **labels: str) -> float:
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)

    def requests(self, status: int) -> float:
        return self.metric("appliance_requests_total", route=ROUTE, method="POST", status=str(status))

    def cache(self, counter: str) -> float:
        return self.metric(f"appliance_cache_{counter}_total", model=MODEL)

    def window(self) -> dict[str, Any]:
        """The five-minute window: the whole scripted sequence fits in it."""
        return dict(self.stats["traffic"]["last_5m"])

    def history(self, field: str) -> int:
        return sum(point[field] for point in self.stats["history"])


class Step:
    """The counters before a step; ``moved`` gives each one's change after it."""

    def __init__(self, appliance: Appliance) -> None:
        self.appliance = appliance
        self.before = Readout(appliance)

    def moved(self) -> Callable[[Callable[[Readout], float]], float]:
        after = Readout(self.appliance)
        self.after = after
        return lambda read: read(after) - read(self.before)


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory, tiny_transformer: Path) -> Any:
    models = [{"name": MODEL, "path": str(tiny_transformer), "main": True}]
    settings = {"APPLIANCE_RATE_LIMIT_RPM": str(RATE_LIMIT_RPM), "APPLIANCE_REQUEST_TIMEOUT": "60"}
    with serving(tmp_path_factory.mktemp("metrics"), models, workers=2, env=settings) as running:
        yield running


def embed(appliance: Appliance, text: str) -> tuple[int, dict[str, str]]:
    status, headers, _ = post(appliance.url + ROUTE, {"model": MODEL, "input": text})
    return status, headers


async def burst(url: str, text: str, n: int) -> list[int]:
    """``n`` identical requests at once, each on its own connection."""
    connector = aiohttp.TCPConnector(limit=n)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        async def one() -> int:
            async with session.post(url + ROUTE, json={"model": MODEL, "input": text}) as response:
                await response.read()
                return response.status

        return list(await asyncio.gather(*(one() for _ in range(n))))


def assert_one_request(moved: Callable[[Callable[[Readout], float]], float], status: int, inputs: int) -> None:
    """One request on the work route with ``status`` and ``inputs`` served, in both views."""
    assert moved(lambda r: r.requests(status)) == 1
    assert moved(lambda r: r.metric("appliance_request_duration_seconds_count", route=ROUTE)) == 1
    assert moved(lambda r: r.metric("appliance_inputs_total", route=ROUTE)) == inputs
    assert moved(lambda r: r.window()["requests"]) == 1
    assert moved(lambda r: r.window()["inputs"]) == inputs
    assert moved(lambda r: r.history("requests")) == 1


def test_each_step_moves_the_counters_it_should(appliance: Appliance, promtool_installed: str) -> None:
    # 1. a miss: computed by a worker, its stages recorded, one cache miss
    step = Step(appliance)
    assert embed(appliance, "the first text anyone sent")[1]["X-Cache"] == "miss"
    moved = step.moved()
    assert_one_request(moved, 200, 1)
    assert moved(lambda r: r.cache("misses")) == 1 and moved(lambda r: r.cache("hits")) == 0
    assert moved(lambda r: r.history("cache_misses")) == 1 and moved(lambda r: r.history("cache_hits")) == 0
    assert moved(lambda r: r.metric("appliance_inference_seconds_count", route=ROUTE)) == 1
    assert moved(lambda r: r.metric("appliance_queue_seconds_count", route=ROUTE)) == 1
    assert moved(lambda r: r.window()["client_errors"] + r.window()["server_errors"]) == 0

    # 2. the same text again: a hit, no worker stage
    step = Step(appliance)
    assert embed(appliance, "the first text anyone sent")[1]["X-Cache"] == "hit"
    moved = step.moved()
    assert_one_request(moved, 200, 1)
    assert moved(lambda r: r.cache("hits")) == 1 and moved(lambda r: r.cache("misses")) == 0
    assert moved(lambda r: r.history("cache_hits")) == 1
    assert moved(lambda r: r.metric("appliance_inference_seconds_count", route=ROUTE)) == 0

    # 3. identical requests at once: one computation, the others joined it (or hit once it was stored)
    step = Step(appliance)
    assert asyncio.run(burst(appliance.url, "asked by many at the same moment", BURST)) == [200] * BURST
    moved = step.moved()
    hits, misses, coalesced = (moved(lambda r, c=c: r.cache(c))  # type: ignore[misc]
                               for c in ("hits", "misses", "coalesced"))  # fmt: skip
    assert hits + misses == BURST and misses - coalesced == 1 and coalesced >= 1
    assert moved(lambda r: r.requests(200)) == BURST and moved(lambda r: r.window()["requests"]) == BURST
    assert moved(lambda r: r.history("cache_hits")) == hits
    assert moved(lambda r: r.history("cache_misses")) == misses  # coalesced inputs are misses for their client
    assert moved(lambda r: r.metric("appliance_inference_seconds_count", route=ROUTE)) == misses

    # 4. a wrong type: 422 with its type, a client error, nothing served
    step = Step(appliance)
    assert post(appliance.url + ROUTE, {"model": MODEL, "input": 5})[0] == 422
    moved = step.moved()
    assert_one_request(moved, 422, 0)
    assert moved(lambda r: r.metric("appliance_error_responses_total", type="invalid_field")) == 1
    assert moved(lambda r: r.window()["client_errors"]) == 1 and moved(lambda r: r.window()["server_errors"]) == 0

    # 5. a worker SIGKILLed: the supervisor respawns it; one crash restart on that slot, in both views
    step = Step(appliance)
    killed = {w["index"]: w["pid"] for w in step.before.stats["workers"]}[1]
    os.kill(killed, signal.SIGKILL)
    respawned = wait_for_respawn(appliance, 1, killed)
    assert embed(appliance, "served after the respawn")[0] == 200
    moved = step.moved()
    card = next(w for w in step.after.stats["workers"] if w["index"] == 1)
    assert card["restarts"] == {"crash": 1} and card["state"] == "ready" and card["pid"] == respawned
    assert step.after.metric("appliance_worker_restarts_total", worker="1", cause="crash") == 1
    assert step.after.metric("appliance_worker_restarts_total", worker="0", cause="crash") == 0
    assert step.after.metric("appliance_worker_up", worker="1") == 1
    assert step.after.metric("appliance_worker_state", worker="1", state="ready") == 1
    assert moved(lambda r: r.requests(200)) == 1
    advice = {a["signal"]: a for a in step.after.stats["scaling"]}
    assert advice["worker_restarts"]["figure"] == 1

    # 6. the rate limit spent: requests until the first 429, counted as a refusal by its cause
    step = Step(appliance)
    answered = until_refused(appliance)
    moved = step.moved()
    assert moved(lambda r: r.requests(429)) == 1 and moved(lambda r: r.requests(200)) == answered
    assert moved(lambda r: r.metric("appliance_admission_refusals_total", cause="rate_limited")) == 1
    assert moved(lambda r: r.metric("appliance_error_responses_total", type="rate_limited")) == 1
    assert moved(lambda r: r.window()["client_errors"]) == 1
    assert moved(lambda r: r.window()["requests"]) == answered + 1
    advice = {a["signal"]: a for a in step.after.stats["scaling"]}
    assert advice["rate_limited"]["figure"] == 1

    # the operator reads themselves were never traffic, and the exposition is valid
    assert step.after.metric("appliance_requests_total", route="/stats", method="GET", status="200") > 0
    assert step.after.stats["traffic"]["last_5m"]["requests"] == 1 + 1 + BURST + 1 + 1 + answered + 1
    check = subprocess.run([promtool_installed, "check", "metrics"], input=step.after.text.encode(),
                           capture_output=True, timeout=60)  # fmt: skip
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    assert step.after.metric("appliance_jobs", status="pending") == 0 and "appliance_jobs{" in step.after.text


def wait_for_respawn(appliance: Appliance, slot: int, old_pid: int) -> int:
    """The new pid of ``slot`` once it is up again."""
    deadline = time.monotonic() + RESPAWN_TIMEOUT_S
    while time.monotonic() < deadline:
        card = next(w for w in get(appliance.url + "/stats")[2]["workers"] if w["index"] == slot)
        if card["up"] and card["pid"] and card["pid"] != old_pid:
            appliance.worker_pids()  # noted for the orphan check
            return int(card["pid"])
        time.sleep(0.2)
    raise AssertionError(f"worker {slot} not back within {RESPAWN_TIMEOUT_S:.0f}s\n{appliance.log_tail()}")


def until_refused(appliance: Appliance) -> int:
    """Hits of one cached text until the rate limit answers 429; how many were answered 200."""
    for answered in range(RATE_LIMIT_RPM + 1):
        status, _ = embed(appliance, "the first text anyone sent")
        if status == 429:
            return answered
        assert status == 200
    raise AssertionError(f"no 429 after {RATE_LIMIT_RPM + 1} requests at {RATE_LIMIT_RPM} per minute")
