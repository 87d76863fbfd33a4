"""``gateway/jobs/service.py``: the jobs' log events from submit to done, and a cancel logged once,
by the call that cancelled (a second DELETE, or one on a finished job, logs nothing)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest

from appliance.config import Config
from appliance.protocol import Input
from gateway.backend import EmbedOutcome
from gateway.jobs.service import Jobs
from gateway.jobs.store import SqliteJobStore


class SlowBackend:
    """Embeds anything as zeros, ``delay_s`` per call: slow enough for a cancel to land mid-job."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    async def embed(self, model: str, inputs: Sequence[Input], **_: Any) -> EmbedOutcome:
        await asyncio.sleep(self.delay_s)
        return EmbedOutcome(vectors=np.zeros((len(inputs), 4), np.float32), tokens=[1] * len(inputs))


def job_events(caplog: pytest.LogCaptureFixture, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [(r.event, vars(r)) for r in caplog.records if getattr(r, "job_id", None) == job_id]  # type: ignore[attr-defined]


async def wait_finished(jobs: Jobs, job_id: str) -> str:
    for _ in range(500):
        job = await jobs.get(job_id)
        if job.status in ("SUCCESS", "FAILURE", "CANCELLED"):
            return job.status
        await asyncio.sleep(0.01)
    raise AssertionError(f"job {job_id} did not finish")


def test_a_job_logs_submitted_running_done_and_a_cancel_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = Config(job_chunk_size=2, job_chunks_in_flight=1, state_dir=str(tmp_path))

    async def scenario() -> tuple[str, str]:
        jobs = Jobs(config, SlowBackend(delay_s=0.05),  # type: ignore[arg-type]
                    open_store=lambda: SqliteJobStore(tmp_path / "jobs.sqlite3", config.job_ttl))  # fmt: skip
        await jobs.open()
        jobs.start()
        try:
            done = await jobs.submit("embed", "m", ["a", "bb", "ccc"], {})
            assert await wait_finished(jobs, done.id) == "SUCCESS"
            await jobs.cancel(done.id)  # finished: nothing to cancel, nothing logged
            slow = await jobs.submit("embed", "m", [f"t{i}" for i in range(200)], {})
            await asyncio.sleep(0.2)
            assert (await jobs.cancel(slow.id)).status == "CANCELLED"
            await jobs.cancel(slow.id)  # already cancelled: logged once only
            return done.id, slow.id
        finally:
            await jobs.stop()
            await jobs.close()

    with caplog.at_level(logging.INFO, logger="appliance.jobs"):
        done_id, cancelled_id = asyncio.run(scenario())
    done = job_events(caplog, done_id)
    assert [name for name, _ in done] == ["job_submitted", "job_running", "job_done"]
    assert done[0][1]["inputs"] == 3 and done[0][1]["chunks"] == 2 and done[2][1]["done"] == 3
    cancelled = job_events(caplog, cancelled_id)
    assert [name for name, _ in cancelled] == ["job_submitted", "job_running", "job_cancelled"]
    assert cancelled[2][1]["done"] < 200
