"""Bulk jobs through the real appliance (``gateway/routes/jobs.py``, ``gateway/jobs/``): submit,
poll, download as JSON, NDJSON and ``.npy``, cancel, bounds, and a job that survives SIGKILL of
the whole appliance (gateway and workers) and resumes without recomputing a committed chunk.

Tiny random models, two workers, small chunks so a job spans many commits."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from harness import Appliance, get, post

pytestmark = pytest.mark.slow

MAIN, CROSS = "tiny", "tiny-cross"
CHUNK = 100
JOB_ENV = {"APPLIANCE_JOB_CHUNK_SIZE": str(CHUNK), "APPLIANCE_MAX_QUEUED_JOBS": "3", "APPLIANCE_MAX_JOB_INPUTS": "6000",
           "APPLIANCE_MAX_JOB_BODY_BYTES": "2000000"}
POLL_S = 0.02


def texts(n: int, seed: int = 7) -> list[str]:
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", "gamma", "delta", "river", "stone", "cloud", "paper", "green", "quiet"]
    return [f"{i} " + " ".join(rng.choice(words, size=int(rng.integers(3, 12)))) for i in range(n)]


def models(tiny_transformer: Path, tiny_cross_encoder: Path | None = None) -> list[dict[str, Any]]:
    # float32: a job's rows must equal the synchronous route's, computed in other batches; bf16
    # (what dtype auto may pick on this CPU) rounds differently per batch composition
    chosen: list[dict[str, Any]] = [{"name": MAIN, "path": str(tiny_transformer), "main": True, "dtype": "float32"}]
    if tiny_cross_encoder is not None:
        chosen.append({"name": CROSS, "path": str(tiny_cross_encoder), "kind": "cross_encoder", "dtype": "float32"})
    return chosen


def submit(appliance: Appliance, body: dict[str, Any]) -> str:
    status, headers, answer = post(appliance.url + "/v1/jobs", body)
    assert status == 202, answer
    assert headers["Location"] == answer["status_url"] == f"/v1/jobs/{answer['id']}"
    return str(answer["id"])


def poll(appliance: Appliance, job_id: str, until: Callable[[dict[str, Any]], bool], timeout: float = 120.0,
         seen: list[dict[str, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _, job = get(f"{appliance.url}/v1/jobs/{job_id}")
        assert status == 200, job
        if seen is not None:
            seen.append(job)
        if until(job):
            return job
        time.sleep(POLL_S)
    raise AssertionError(f"job {job_id} did not get there in {timeout}s: {job}\n{appliance.log_tail()}")


def finished(job: dict[str, Any]) -> bool:
    return job["status"] in ("SUCCESS", "FAILURE", "CANCELLED")


def synchronous(appliance: Appliance, inputs: list[str]) -> np.ndarray:
    rows = []
    for start in range(0, len(inputs), 1000):
        status, _, body = post(appliance.url + "/api/embed", {"model": MAIN, "input": inputs[start:start + 1000]})
        assert status == 200, body
        rows.append(np.asarray(body["embeddings"], dtype=np.float32))
    return np.concatenate(rows)


def download(appliance: Appliance, job_id: str, accept: str) -> tuple[dict[str, str], bytes]:
    request = urllib.request.Request(f"{appliance.url}/v1/jobs/{job_id}/results", headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=60) as response:
        return dict(response.headers), response.read()


def paged(appliance: Appliance, job_id: str, limit: int = 700) -> list[dict[str, Any]]:
    items, offset = [], 0
    while offset is not None:
        status, _, page = get(f"{appliance.url}/v1/jobs/{job_id}/results?offset={offset}&limit={limit}")
        assert status == 200, page
        items.extend(page["data"])
        offset = page["next_offset"]
    return items


def test_a_5000_text_job_matches_the_synchronous_route_in_every_format(launch: Any, tiny_transformer: Path) -> None:
    appliance = launch(models(tiny_transformer), env=JOB_ENV)
    inputs = texts(5000)
    job_id = submit(appliance, {"model": MAIN, "inputs": inputs, "use_cache": False})
    seen: list[dict[str, Any]] = []
    job = poll(appliance, job_id, finished, seen=seen)
    assert job["status"] == "SUCCESS" and job["progress"] == {"done": 5000, "failed": 0, "total": 5000}
    done = [j["progress"]["done"] for j in seen]
    assert done == sorted(done), "progress went backwards"
    assert job["created_at"] <= job["started_at"] <= job["finished_at"] < job["expires_at"]
    expected = synchronous(appliance, inputs)
    items = paged(appliance, job_id)
    assert [item["index"] for item in items] == list(range(5000))
    np.testing.assert_allclose(np.asarray([item["embedding"] for item in items], np.float32), expected, atol=1e-6)
    _, body = download(appliance, job_id, "application/x-ndjson")
    lines = [json.loads(line) for line in body.splitlines()]
    assert [line["index"] for line in lines] == list(range(5000))
    np.testing.assert_array_equal(np.asarray([line["embedding"] for line in lines], np.float32),
                                  np.asarray([item["embedding"] for item in items], np.float32))  # fmt: skip
    headers, raw = download(appliance, job_id, "application/x-npy")
    assert headers["X-Failed-Count"] == "0"
    array = np.load(io.BytesIO(raw))
    assert array.dtype == np.float32 and array.shape == expected.shape
    np.testing.assert_allclose(array, expected, atol=1e-6)


def test_failed_items_keep_their_index_and_error(launch: Any, tiny_transformer: Path) -> None:
    appliance = launch(models(tiny_transformer), env=JOB_ENV)
    inputs = texts(250)
    inputs[3], inputs[170] = "", "word " * 5000  # empty; too long with truncate off
    job_id = submit(appliance, {"model": MAIN, "inputs": inputs, "truncate": False})
    job = poll(appliance, job_id, finished)
    assert job["status"] == "SUCCESS" and job["progress"] == {"done": 248, "failed": 2, "total": 250}
    items = {item["index"]: item for item in paged(appliance, job_id)}
    assert items[3]["error"]["type"] == "empty_input" and "embedding" not in items[3]
    assert items[170]["error"]["type"] == "input_too_long"
    good = [i for i in range(250) if i not in (3, 170)]
    np.testing.assert_allclose(np.asarray([items[i]["embedding"] for i in good], np.float32),
                               synchronous(appliance, [inputs[i] for i in good]), atol=1e-6)  # fmt: skip
    headers, raw = download(appliance, job_id, "application/x-npy")
    array = np.load(io.BytesIO(raw))
    assert headers["X-Failed-Count"] == "2" and np.isnan(array[[3, 170]]).all() and not np.isnan(array[good]).any()


def test_a_rerank_job_scores_every_document(launch: Any, tiny_transformer: Path, tiny_cross_encoder: Path) -> None:
    appliance = launch(models(tiny_transformer, tiny_cross_encoder), env=JOB_ENV)
    documents = texts(230)
    job_id = submit(appliance, {"model": CROSS, "task": "rerank", "query": "a river of stone", "inputs": documents})
    assert poll(appliance, job_id, finished)["status"] == "SUCCESS"
    scores = [item["score"] for item in paged(appliance, job_id)]
    status, _, direct = post(appliance.url + "/v1/rerank", {"model": CROSS, "query": "a river of stone",
                                                            "documents": documents[:50]})  # fmt: skip
    assert status == 200 and len(scores) == 230
    by_index = {r["index"]: r["relevance_score"] for r in direct["results"]}
    np.testing.assert_allclose([scores[i] for i in range(50)], [by_index[i] for i in range(50)], atol=1e-6)


def test_cancel_stops_the_work_and_bounds_are_clear_errors(launch: Any, tiny_transformer: Path) -> None:
    appliance = launch(models(tiny_transformer), env={**JOB_ENV, "APPLIANCE_JOB_CHUNK_SIZE": "20"})
    job_id = submit(appliance, {"model": MAIN, "inputs": texts(6000), "use_cache": False})
    poll(appliance, job_id, lambda job: job["progress"]["done"] >= 40)
    status, _, cancelled = urllib_delete(f"{appliance.url}/v1/jobs/{job_id}")
    assert status == 200 and cancelled["status"] == "CANCELLED"
    time.sleep(1.0)
    after = get(f"{appliance.url}/v1/jobs/{job_id}")[2]
    time.sleep(1.0)
    later = get(f"{appliance.url}/v1/jobs/{job_id}")[2]
    assert later["progress"] == after["progress"] and later["progress"]["done"] < 6000, "work went on"
    status, _, error = post(appliance.url + "/v1/jobs", {"model": MAIN, "inputs": texts(6001)})
    assert status == 422 and error["error"]["type"] == "too_many_inputs"
    status, _, error = post(appliance.url + "/v1/jobs", {"model": MAIN, "inputs": ["x" * 1000] * 2100})
    assert status == 413 and error["error"]["type"] == "body_too_large"  # over max_job_body_bytes
    status, _, error = post(appliance.url + "/v1/jobs", {"model": MAIN, "task": "rerank", "inputs": ["a"]})
    assert status == 422 and "query" in error["error"]["message"]
    assert get(f"{appliance.url}/v1/jobs/nope")[0] == 404
    assert get(f"{appliance.url}/v1/jobs/nope")[2]["error"]["type"] == "job_not_found"
    for _ in range(3):
        submit(appliance, {"model": MAIN, "inputs": texts(6000), "use_cache": False})
    status, headers, error = post(appliance.url + "/jobs", {"model": MAIN, "inputs": ["one more"]})
    assert status == 429 and error["error"]["type"] == "queue_full" and "Retry-After" in headers
    queue = get(appliance.url + "/queue-status")[2]
    assert queue["jobs"]["by_status"]["PENDING"] + queue["jobs"]["by_status"]["PROCESSING"] == 3
    assert queue["jobs"]["by_status"]["CANCELLED"] == 1 and queue["jobs"]["oldest_pending_age_s"] > 0
    assert [w["index"] for w in queue["workers"]] == [0, 1] and queue["interactive_inputs"] >= 0
    listed = get(f"{appliance.url}/v1/jobs?status=cancelled")[2]["data"]
    assert [job["id"] for job in listed] == [job_id]


def urllib_delete(url: str) -> tuple[int, dict[str, str], Any]:
    with urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=10) as response:
        return response.status, dict(response.headers), json.loads(response.read())


def committed_items(state: Path, job_id: str) -> int:
    with sqlite3.connect(state / "jobs.sqlite3") as db:
        return int(db.execute("SELECT done + failed FROM jobs WHERE id = ?", (job_id,)).fetchone()[0])


def computed_items(appliance: Appliance, settle_s: float = 2.5) -> int:
    """Inputs the workers have computed, once their 1 s Stats have caught up."""
    time.sleep(settle_s)
    return sum(worker["items"] for worker in get(appliance.url + "/stats")[2]["workers"])


def test_sigkill_of_everything_mid_job_resumes_without_recomputing(launch: Any, tmp_path: Path,
                                                                   tiny_transformer: Path) -> None:  # fmt: skip
    first = launch(models(tiny_transformer), env=JOB_ENV)
    inputs = texts(5000, seed=11)
    job_id = submit(first, {"model": MAIN, "inputs": inputs, "use_cache": False})
    poll(first, job_id, lambda job: job["progress"]["done"] >= 3 * CHUNK)
    os.killpg(first.process.pid, signal.SIGKILL)  # the gateway and every worker at once
    first.process.wait(10)
    committed = committed_items(tmp_path / "state", job_id)
    assert 3 * CHUNK <= committed < 5000, "the kill must land mid-job"
    second = launch(models(tiny_transformer), env=JOB_ENV)
    job = poll(second, job_id, finished)
    assert job["status"] == "SUCCESS" and job["progress"]["done"] == 5000
    assert computed_items(second) == 5000 - committed, "a committed chunk was computed again"
    np.testing.assert_allclose(np.asarray([item["embedding"] for item in paged(second, job_id)], np.float32),
                               synchronous(second, inputs), atol=1e-6)  # fmt: skip
