"""``gateway/jobs/runner.py`` over a real SQLite store and a scripted backend: a chunk that fails
for a reason of its own is retried with back-off, then its items fail; an item error fails
only that item; a cancelled job stops; every job ends."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest

from appliance.config import Config
from appliance.protocol import BACKGROUND, Input
from gateway import errors
from gateway.backend import EmbedOutcome
from gateway.jobs import runner as runner_module
from gateway.jobs.model import NewJob
from gateway.jobs.runner import JobRunner
from gateway.jobs.store import SqliteJobStore
from gateway.jobs.threaded import ThreadedStore

DIM = 4


class ScriptedBackend:
    """Embeds each text as [len, 0, 0, 0]; raises the queued errors first; "BAD" is too long."""

    def __init__(self, failures: Sequence[errors.ApiError] = (), delay_s: float = 0.0) -> None:
        self.failures = list(failures)
        self.delay_s = delay_s
        self.calls: list[tuple[list[Input], int]] = []

    async def embed(self, model: str, inputs: Sequence[Input], *, truncate: bool, deadline: float,
                    use_cache: bool = True, priority: int = 0, **options: Any) -> EmbedOutcome:  # fmt: skip
        self.calls.append((list(inputs), priority))
        await asyncio.sleep(self.delay_s)
        if self.failures:
            raise self.failures.pop(0)
        if "BAD" in inputs:
            raise errors.InputTooLong(f"too many tokens (input {list(inputs).index('BAD')})")
        vectors = np.zeros((len(inputs), DIM), np.float32)
        vectors[:, 0] = [len(item) for item in inputs]
        return EmbedOutcome(vectors=vectors, tokens=[1] * len(inputs))


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_module, "BACKOFF_FIRST_S", 0.01)
    monkeypatch.setattr(runner_module, "IDLE_POLL_S", 0.01)


async def run_jobs(tmp_path: Path, backend: ScriptedBackend, jobs: list[list[str]], *, retries: int = 3,
                   cancel_first_after: float | None = None) -> tuple[list[Any], SqliteJobStore]:  # fmt: skip
    store = SqliteJobStore(tmp_path / "jobs.sqlite3", ttl_s=3600)
    threaded = ThreadedStore(store)
    config = Config(job_retries=retries, job_chunks_in_flight=1, request_timeout=5.0)
    runner = JobRunner(config, threaded, backend)  # type: ignore[arg-type]
    submitted = [await threaded.submit(NewJob(task="embed", model="m", options={}, chunk_size=3), texts)
                 for texts in jobs]  # fmt: skip
    running = asyncio.create_task(runner.run())
    if cancel_first_after is not None:
        await asyncio.sleep(cancel_first_after)
        await threaded.cancel(submitted[0].id, 0.0)
        runner.cancel_job(submitted[0].id)
    for _ in range(500):
        views = [await threaded.get(job.id) for job in submitted]
        if all(view is not None and view.status in ("SUCCESS", "FAILURE", "CANCELLED") for view in views):
            break
        await asyncio.sleep(0.01)
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    return views, store


def test_a_lost_worker_is_retried_and_the_job_still_succeeds(tmp_path: Path) -> None:
    lost = errors.WorkerLost("the worker died")
    backend = ScriptedBackend(failures=[lost, lost])
    (job,), store = asyncio.run(run_jobs(tmp_path, backend, [["a", "bb", "ccc", "dddd"]]))
    assert job.status == "SUCCESS" and (job.done, job.failed) == (4, 0)
    assert [item.vector for item in store.results(job.id)][1] == np.array([2, 0, 0, 0], "<f4").tobytes()
    assert len(backend.calls) == 4 and all(priority == BACKGROUND for _, priority in backend.calls)


def test_a_chunk_that_keeps_failing_fails_its_items_and_the_job_ends(tmp_path: Path) -> None:
    backend = ScriptedBackend(failures=[errors.NotReady("no holder")] * 10)
    (job,), store = asyncio.run(run_jobs(tmp_path, backend, [["a", "b", "c", "d"]], retries=2))
    assert job.status in ("SUCCESS", "FAILURE") and job.done + job.failed == 4
    failed = [item for item in store.results(job.id) if item.error_type is not None]
    assert failed and all(item.error_type == "not_ready" for item in failed)
    assert len(backend.calls) >= 3  # the first chunk: one try and two retries


def test_an_item_error_fails_only_that_item(tmp_path: Path) -> None:
    backend = ScriptedBackend()
    (job,), store = asyncio.run(run_jobs(tmp_path, backend, [["a", "BAD", "", "dd"]]))
    assert job.status == "SUCCESS" and (job.done, job.failed) == (2, 2)
    results = {item.index: item for item in store.results(job.id)}
    assert results[1].error_type == "input_too_long" and results[1].error_message.endswith("(input 1)")
    assert results[2].error_type == "empty_input" and results[3].vector is not None


def test_a_cancelled_job_stops_while_the_next_one_runs(tmp_path: Path) -> None:
    backend = ScriptedBackend(delay_s=0.02)
    (first, second), _ = asyncio.run(run_jobs(tmp_path, backend, [[f"t{i}" for i in range(300)], ["x", "y"]],
                                              cancel_first_after=0.1))  # fmt: skip
    assert first.status == "CANCELLED" and first.done < 300
    assert second.status == "SUCCESS" and second.done == 2
