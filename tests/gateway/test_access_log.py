"""gateway/access_log.py: the sampler, the runner's arguments, and the real appliance's access log
off, on for every request, and on for half of them (counted exactly: the sample is deterministic)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from appliance.config import load_config
from gateway.access_log import SampledAccessLog, Sampler, runner_options
from harness import Appliance, assert_clean_exit, get, post

MODEL = "tiny"
REQUESTS = 20  # even: any 20 consecutive requests hold exactly 10 of every second one


@pytest.mark.parametrize(("fraction", "taken"), [(0.0, 0), (1.0, 40), (0.5, 20), (0.25, 10), (0.1, 4), (0.3, 12)])
def test_the_sampler_takes_its_fraction_exactly_and_evenly(fraction: float, taken: int) -> None:
    sampler = Sampler(fraction)
    picks = [sampler.take() for _ in range(40)]
    assert sum(picks) == taken
    if fraction == 0.25:
        assert [i for i, picked in enumerate(picks, 1) if picked] == [4, 8, 12, 16, 20, 24, 28, 32, 36, 40]


def test_off_or_a_zero_sample_gives_aiohttp_no_access_logger_at_all() -> None:
    assert runner_options(load_config(environ={})) == {"access_log": None}
    zero = load_config(environ={"APPLIANCE_ACCESS_LOG": "true", "APPLIANCE_ACCESS_LOG_SAMPLE": "0"})
    assert runner_options(zero) == {"access_log": None}


def test_each_appliance_gets_a_sampler_of_its_own_shared_by_its_connections() -> None:
    on = load_config(environ={"APPLIANCE_ACCESS_LOG": "true", "APPLIANCE_ACCESS_LOG_SAMPLE": "0.5"})
    first, second = runner_options(on), runner_options(on)
    assert issubclass(first["access_log_class"], SampledAccessLog) and first["access_log"].name == "gateway.access"
    assert first["access_log_class"].sampler is not second["access_log_class"].sampler
    one, other = first["access_log_class"](first["access_log"], ""), first["access_log_class"](first["access_log"], "")
    assert one.sampler is other.sampler  # aiohttp makes one logger per connection


# ---- the real appliance -------------------------------------------------------------------------
def requests(appliance: Appliance) -> list[tuple[str, str, int]]:
    """``REQUESTS`` requests, each with its own X-Request-ID: (request id, method + path, status)."""
    sent = []
    for i in range(REQUESTS):
        rid = f"access-test-{i}"
        if i % 3 == 0:
            body = {"model": MODEL, "input": [f"t {i}"]}
            status, _, _ = post(appliance.url + "/api/embed", body, headers={"X-Request-ID": rid})
            sent.append((rid, "POST /api/embed", status))
        elif i % 3 == 1:
            status, _, _ = get(appliance.url + "/health", headers={"X-Request-ID": rid})
            sent.append((rid, "GET /health", status))
        else:
            status, _, _ = get(appliance.url + "/no/such/path?secret=1", headers={"X-Request-ID": rid})
            sent.append((rid, "GET /no/such/path", status))
    assert [s for _, _, s in sent].count(404) == REQUESTS // 3 and 200 in {s for _, _, s in sent}
    return sent


def access_lines(appliance: Appliance) -> list[dict[str, Any]]:
    """Every line of an access logger (ours, or aiohttp's own were it left on), read once the
    appliance has stopped: aiohttp logs after the answer has gone."""
    lines = [json.loads(line) for line in appliance.log().splitlines()]
    return [e for e in lines if e["logger"] in ("gateway.access", "aiohttp.access") or e["event"] == "http_access"]


def run(launch: Callable[..., Appliance], tiny_transformer: Path,
        **env: str) -> tuple[list[tuple[str, str, int]], list[dict[str, Any]]]:  # fmt: skip
    """The test's requests and the access lines logged for them."""
    models = [{"name": MODEL, "path": str(tiny_transformer), "main": True}]
    appliance = launch(models, workers=1, env={"APPLIANCE_LOG_FORMAT": "json", **env})
    sent = requests(appliance)
    assert_clean_exit(appliance, appliance.stop())
    return sent, [e for e in access_lines(appliance) if str(e.get("request_id")).startswith("access-test-")]


@pytest.mark.slow
def test_off_by_default_no_line_per_request(launch: Callable[..., Appliance], tiny_transformer: Path) -> None:
    models = [{"name": MODEL, "path": str(tiny_transformer), "main": True}]
    appliance = launch(models, workers=1, env={"APPLIANCE_LOG_FORMAT": "json"})
    requests(appliance)
    assert_clean_exit(appliance, appliance.stop())
    assert access_lines(appliance) == []


@pytest.mark.slow
def test_sample_1_logs_one_line_per_request_with_its_fields(launch: Callable[..., Appliance],
                                                            tiny_transformer: Path) -> None:  # fmt: skip
    sent, lines = run(launch, tiny_transformer, APPLIANCE_ACCESS_LOG="true", APPLIANCE_ACCESS_LOG_SAMPLE="1")
    assert [line["request_id"] for line in lines] == [rid for rid, _, _ in sent]
    for (rid, route, status), line in zip(sent, lines):
        assert f"{line['method']} {line['path']}" == route and line["status"] == status, line
        assert line["logger"] == "gateway.access" and line["level"] == "INFO"
        assert line["duration_ms"] >= 0 and line["remote"] == "127.0.0.1"
        assert "secret" not in json.dumps(line), "the query string is never logged"


@pytest.mark.slow
def test_sample_half_logs_every_second_request(launch: Callable[..., Appliance], tiny_transformer: Path) -> None:
    sent, lines = run(launch, tiny_transformer, APPLIANCE_ACCESS_LOG="true", APPLIANCE_ACCESS_LOG_SAMPLE="0.5")
    assert len(lines) == REQUESTS // 2
    logged = [int(line["request_id"].rsplit("-", 1)[1]) for line in lines]
    assert len({i % 2 for i in logged}) == 1 and logged == sorted(logged), "every second request, in order"


def test_a_log_level_above_info_leaves_aiohttp_nothing_to_call() -> None:
    on = runner_options(load_config(environ={"APPLIANCE_ACCESS_LOG": "true"}))
    logger = on["access_log"]
    writer = on["access_log_class"](logger, "")
    saved = logger.level
    try:
        logger.setLevel("WARNING")
        assert not writer.enabled
        logger.setLevel("INFO")
        assert writer.enabled
    finally:
        logger.setLevel(saved)
