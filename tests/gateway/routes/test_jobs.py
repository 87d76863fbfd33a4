"""``gateway/routes/jobs.py``'s query parameters and download headers, over a real server with a
real job store (SQLite under ``tmp_path``) and the in-test backend; no runner, so a submitted job
stays PENDING. The end-to-end job tests are ``tests/gateway/jobs/test_jobs_integration.py``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Iterator

import msgspec
import pytest

from fake_backend import TEST_CONFIG, FakeBackend, ServerThread
from gateway.app import build_app
from gateway.jobs.service import Jobs
from gateway.routes.jobs import OFFSET_MAX
from http_checks import error_of


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    config = msgspec.structs.replace(TEST_CONFIG, state_dir=str(tmp_path))
    backend = FakeBackend()
    jobs = Jobs(config, backend)
    running = ServerThread(build_app(config, backend, jobs=jobs)).start()
    try:
        asyncio.run_coroutine_threadsafe(jobs.open(), running.loop).result(timeout=10)
        yield running
    finally:
        asyncio.run_coroutine_threadsafe(jobs.close(), running.loop).result(timeout=10)
        running.stop()


@pytest.fixture
def job_id(server: ServerThread) -> str:
    reply = server.post("/v1/jobs", {"inputs": ["first text", "second text"]})
    assert reply.status == 202, reply.body
    return str(reply.json()["id"])


def test_an_offset_past_the_stores_integers_is_a_422_not_a_500(server: ServerThread, job_id: str) -> None:
    error_of(server.get(f"/v1/jobs/{job_id}/results?offset={OFFSET_MAX + 1}"), 422, "invalid_field")
    error_of(server.get(f"/v1/jobs/{job_id}/results?offset={10**24}"), 422, "invalid_field")
    page = server.get(f"/v1/jobs/{job_id}/results?offset={OFFSET_MAX}")
    assert page.status == 200 and page.json()["data"] == [] and page.json()["next_offset"] is None


def test_a_bad_offset_or_limit_is_a_422_for_every_form(server: ServerThread, job_id: str) -> None:
    for form in ("json", "ndjson", "npy"):  # the whole-job forms do not page, but take no nonsense either
        error_of(server.get(f"/v1/jobs/{job_id}/results?format={form}&limit=-1e-05"), 422, "invalid_field")
        error_of(server.get(f"/v1/jobs/{job_id}/results?format={form}&offset=x"), 422, "invalid_field")


def test_an_unknown_format_is_a_422(server: ServerThread, job_id: str) -> None:
    reply = server.get(f"/v1/jobs/{job_id}/results?format=null")
    error_of(reply, 422, "invalid_field")
    assert "format" in reply.json()["error"]["message"]


def test_format_overrides_accept(server: ServerThread, job_id: str) -> None:
    as_json = server.get(f"/v1/jobs/{job_id}/results?format=json", headers={"Accept": "application/x-npy"})
    assert as_json.status == 200 and as_json.headers["Content-Type"].startswith("application/json")
    lines = server.get(f"/v1/jobs/{job_id}/results?format=ndjson", headers={"Accept": "application/x-npy"})
    assert lines.status == 200 and lines.headers["Content-Type"] == "application/x-ndjson"


def test_streamed_downloads_carry_the_request_id(server: ServerThread, job_id: str) -> None:
    reply = server.get(f"/v1/jobs/{job_id}/results", headers={"Accept": "application/x-ndjson", "X-Request-ID": "r-1"})
    assert reply.status == 200 and reply.headers["X-Request-ID"] == "r-1"
    assert reply.headers["X-Job-Status"] == "PENDING"
    unfinished = server.get(f"/v1/jobs/{job_id}/results?format=npy", headers={"X-Request-ID": "r-2"})
    error_of(unfinished, 409, "job_not_finished")
    assert unfinished.headers["X-Request-ID"] == "r-2"
