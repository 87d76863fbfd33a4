"""``Jobs``: what the job routes call, and the jobs' part of the appliance's lifecycle.

It owns the store (opened at start, before any model loads, so a corrupt or unwritable
``state_dir`` fails the start at once) and the runner (started once the workers are up). The
bounds live here: ``max_job_inputs`` (422) and ``max_queued_jobs`` (429); the body bound
(``max_job_body_bytes``, 413) is the route's, since it applies before the body is parsed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from appliance.config import Config
from appliance.protocol import Input
from gateway import errors
from gateway.backend import Backend
from gateway.jobs.model import ItemResult, Job, JobQueue, JobStatus, JobTask, NewJob
from gateway.jobs.runner import JobRunner
from gateway.jobs.store import JobStore, SqliteJobStore
from gateway.jobs.threaded import ThreadedStore

log = logging.getLogger("appliance.jobs")

STORE_FILE = "jobs.sqlite3"
RETRY_AFTER_S = 30.0  # a full queue drains at the pace of whole jobs


class JobNotFound(errors.NotFound):
    type = "job_not_found"


class Jobs:
    def __init__(self, config: Config, backend: Backend,
                 open_store: Callable[[], JobStore] | None = None) -> None:  # fmt: skip
        self.config = config
        self.backend = backend
        self.open_store = open_store or (lambda: SqliteJobStore(Path(config.state_dir) / STORE_FILE, config.job_ttl))
        self.store: ThreadedStore | None = None
        self.runner: JobRunner | None = None
        self._running: asyncio.Task[None] | None = None

    # ---- lifecycle -----------------------------------------------------------------------
    async def open(self) -> None:
        """Open the store and hand back the chunks a crash or a stop left half done."""
        self.store = ThreadedStore(self.open_store())
        recovered = await self.store.recover()
        if recovered:
            log.info("jobs: %d chunk(s) interrupted by the last stop will be computed again", recovered,
                     extra={"event": "jobs_recovered", "chunks": recovered})  # fmt: skip
        self.runner = JobRunner(self.config, self.store, self.backend)

    def start(self) -> None:
        assert self.runner is not None, "open() first"
        self._running = asyncio.create_task(self.runner.run(), name="job runner")

    async def stop(self) -> None:
        if self._running is not None:
            self._running.cancel()
            await asyncio.gather(self._running, return_exceptions=True)
            self._running = None

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()
            self.store = None

    # ---- what the routes call ------------------------------------------------------------
    async def submit(self, task: JobTask, model: str, inputs: Sequence[Input], options: dict[str, Any]) -> Job:
        store = self.opened()
        if len(inputs) > self.config.max_job_inputs:
            raise errors.TooManyInputs(f"`inputs` has {len(inputs)} items; a job takes at most "
                                       f"{self.config.max_job_inputs} (max_job_inputs)")  # fmt: skip
        counts = await store.counts()
        queued = counts["PENDING"] + counts["PROCESSING"]
        if queued >= self.config.max_queued_jobs:
            raise errors.QueueFull(f"{queued} jobs are queued (max_queued_jobs); retry later", retry_after=RETRY_AFTER_S)
        job = await store.submit(NewJob(task=task, model=model, options=options,
                                        chunk_size=self.config.job_chunk_size), inputs)  # fmt: skip
        log.info("job %s submitted: %s of %d inputs on %r", job.id, task, job.total, model,
                 extra={"event": "job_submitted", "job_id": job.id, "task": task, "model": model,
                        "inputs": job.total, "chunks": job.chunks})  # fmt: skip
        assert self.runner is not None
        self.runner.wake()
        return job

    async def get(self, job_id: str) -> Job:
        job = await self.opened().get(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id!r} (it never existed, or expired after job_ttl)")
        return job

    async def list(self, status: JobStatus | None, limit: int) -> list[Job]:
        return await self.opened().list(status, limit)

    async def cancel(self, job_id: str) -> Job:
        now = time.time()
        job = await self.opened().cancel(job_id, now)
        if job is None:
            raise JobNotFound(f"no job {job_id!r}")
        stopped = self.runner.cancel_job(job_id) if self.runner is not None else 0
        if job.status == "CANCELLED" and job.finished == now:  # cancelled by this call, not before it
            log.info("job %s cancelled: %d done, %d failed, %d chunk(s) in flight stopped", job_id, job.done,
                     job.failed, stopped, extra={"event": "job_cancelled", "job_id": job_id, "done": job.done,
                     "failed": job.failed, "chunks_stopped": stopped})  # fmt: skip
        return job

    async def results(self, job_id: str, offset: int, limit: int | None) -> tuple[Job, list[ItemResult]]:
        job = await self.get(job_id)
        return job, await self.opened().results(job_id, offset, limit)

    async def queue(self) -> JobQueue:
        """Jobs by status, the oldest unfinished job's age, the chunks and inputs in flight."""
        store = self.opened()
        runner = self.runner
        return JobQueue(by_status=await store.counts(), oldest_pending_age_s=await store.oldest_pending_age(time.time()),
                        chunks_in_flight=runner.in_flight() if runner else 0,
                        inputs_in_flight=runner.inputs_in_flight if runner else 0)  # fmt: skip

    def opened(self) -> ThreadedStore:
        if self.store is None:
            raise errors.NotReady("the job store is not open", retry_after=5.0)
        return self.store
