"""The job runner: claims chunks from the store, computes them, commits each with its results.

The cycle, one chunk at a time per free slot (``job_chunks_in_flight`` slots):

1. **Claim** the next pending chunk (oldest job first, chunks in order). None pending: sleep
   until a submit wakes us or ``IDLE_POLL_S`` passes (a chunk released with a back-off becomes
   claimable again by time alone).
2. **Compute** it through the backend at background priority (``gateway/jobs/compute.py``): the
   workers serve interactive requests first, and the chunk still uses the cache and coalescing.
3. **Commit** its results and progress in one transaction. A chunk that failed for a reason of
   its own (a worker lost twice, no holder within the deadline, a full queue) is released and
   retried after ``BACKOFF_FIRST_S * 2**attempt``; after ``job_retries`` retries its items
   are committed as failed with that error, so a job always finishes.

What a crash costs: the chunks that were computing. Their work was never committed, so a
restart hands them out again (``JobStore.recover``) and no committed chunk is ever recomputed.
A stop (SIGTERM) cancels the chunks in flight the same way. Cancelling a job cancels its chunks
in flight; a commit for a cancelled job writes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from appliance.config import Config
from gateway import errors
from gateway.backend import Backend
from gateway.jobs.compute import compute_chunk, item_error
from gateway.jobs.model import FINISHED, Claim, ItemResult, Job
from gateway.jobs.threaded import ThreadedStore

log = logging.getLogger("appliance.jobs")

IDLE_POLL_S = 1.0
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0
SWEEP_EVERY_S = 60.0
# A background chunk waits behind interactive work by design: give it far longer than a request.
CHUNK_TIMEOUT_FACTOR = 10
# the log event of each way a job finishes
FINISH_EVENTS = {"SUCCESS": "job_done", "FAILURE": "job_failed", "CANCELLED": "job_cancelled"}


class JobRunner:
    def __init__(self, config: Config, store: ThreadedStore, backend: Backend,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.config = config
        self.store = store
        self.backend = backend
        self.clock = clock
        self.woken = asyncio.Event()
        self.computing: dict[str, set[asyncio.Task[None]]] = {}  # job id -> its chunks in flight
        self.inputs_in_flight = 0
        self.chunks_committed = 0
        self.chunks_retried = 0

    # ---- the cycle ---------------------------------------------------------------------
    async def run(self) -> None:
        """Until cancelled; cancelling it cancels the chunks in flight (recovered at restart)."""
        slots = asyncio.Semaphore(self.config.job_chunks_in_flight)
        sweeper = asyncio.create_task(self.sweep())
        try:
            while True:
                await slots.acquire()
                claim = await self.store.claim(self.clock())
                if claim is None:
                    slots.release()
                    await self.idle()
                    continue
                self.start(claim).add_done_callback(lambda _: slots.release())
        finally:
            sweeper.cancel()
            await self.cancel_all()

    def wake(self) -> None:
        """A job was submitted: claim now rather than at the next poll."""
        self.woken.set()

    async def idle(self) -> None:
        try:
            await asyncio.wait_for(self.woken.wait(), IDLE_POLL_S)
        except asyncio.TimeoutError:
            pass
        self.woken.clear()

    def start(self, claim: Claim) -> asyncio.Task[None]:
        task = asyncio.create_task(self.process(claim), name=f"job {claim.job.id} chunk {claim.chunk}")
        running = self.computing.setdefault(claim.job.id, set())
        running.add(task)
        task.add_done_callback(lambda done: self.forget(claim.job.id, done))
        return task

    def forget(self, job_id: str, task: asyncio.Task[None]) -> None:
        running = self.computing.get(job_id, set())
        running.discard(task)
        if not running:
            self.computing.pop(job_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("job %s: a chunk task failed", job_id, exc_info=task.exception())

    # ---- one chunk ---------------------------------------------------------------------
    async def process(self, claim: Claim) -> None:
        if claim.chunk == 0 and claim.attempts == 0:
            log.info("job %s processing: %d inputs in %d chunks", claim.job.id, claim.job.total, claim.job.chunks,
                     extra={"event": "job_running", "job_id": claim.job.id, "inputs": claim.job.total,
                            "chunks": claim.job.chunks})  # fmt: skip
        self.inputs_in_flight += len(claim.inputs)
        try:
            items = await self.compute(claim)
        finally:
            self.inputs_in_flight -= len(claim.inputs)
        if items is None:
            return  # released for a retry
        job = await self.store.commit(claim, items, self.clock())
        self.chunks_committed += 1
        if job.status in FINISHED:
            log.info("job %s %s: %d done, %d failed", job.id, job.status, job.done, job.failed,
                     extra={"event": FINISH_EVENTS[job.status], "job_id": job.id, "done": job.done,
                            "failed": job.failed, "duration_s": round(job_duration(job), 3)})  # fmt: skip

    async def compute(self, claim: Claim) -> list[ItemResult] | None:
        """The chunk's results; None when it was released to be retried later."""
        job = claim.job
        timeout = self.config.request_timeout * CHUNK_TIMEOUT_FACTOR
        try:
            return await compute_chunk(self.backend, job.task, job.model, job.options, claim.start,
                                       claim.inputs, timeout)  # fmt: skip
        except errors.ApiError as exc:
            return await self.retry_or_fail(claim, exc)
        except Exception as exc:  # a bug must fail the chunk's items, not stall the job forever
            log.exception("job %s chunk %d: unexpected error", job.id, claim.chunk)
            return await self.retry_or_fail(claim, errors.Internal(f"internal error: {type(exc).__name__}"))

    async def retry_or_fail(self, claim: Claim, exc: errors.ApiError) -> list[ItemResult] | None:
        if claim.attempts < self.config.job_retries:
            delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2**claim.attempts)
            log.warning("job %s chunk %d failed (%s: %s); retrying in %.0fs", claim.job.id, claim.chunk,
                        exc.type, exc.message, delay,
                        extra={"event": "job_chunk_retry", "job_id": claim.job.id, "chunk": claim.chunk,
                               "error": exc.type, "attempt": claim.attempts + 1, "delay_s": delay})  # fmt: skip
            now = self.clock()
            await self.store.release(claim, now, now + delay)
            self.chunks_retried += 1
            return None
        log.error("job %s chunk %d failed %d times (%s); its items fail", claim.job.id, claim.chunk,
                  claim.attempts + 1, exc.type, extra={"event": "job_chunk_failed", "job_id": claim.job.id,
                  "chunk": claim.chunk, "error": exc.type, "attempts": claim.attempts + 1})  # fmt: skip
        return [item_error(claim.start + i, exc) for i in range(len(claim.inputs))]

    # ---- cancelling and sweeping -------------------------------------------------------
    def cancel_job(self, job_id: str) -> int:
        """Stop computing a job's chunks in flight; how many were stopped."""
        running = list(self.computing.get(job_id, ()))
        for task in running:
            task.cancel()
        return len(running)

    async def cancel_all(self) -> None:
        tasks = [task for running in self.computing.values() for task in running]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def sweep(self) -> None:
        """Delete finished jobs past ``job_ttl`` (their results with them)."""
        while True:
            removed = await self.store.expire(self.clock())
            if removed:
                log.info("expired %d finished job(s)", removed, extra={"event": "job_expired", "count": removed})
            await asyncio.sleep(SWEEP_EVERY_S)

    def in_flight(self) -> int:
        return sum(len(running) for running in self.computing.values())


def job_duration(job: Job) -> float:
    """Seconds from submit to finish (0 for a job not finished)."""
    return (job.finished - job.created) if job.finished is not None else 0.0
