"""A ``JobStore`` used from the event loop: every call runs on one dedicated thread.

SQLite calls block (a 100,000-input submit takes a noticeable fraction of a second, a commit
waits for the WAL), and the event loop must never wait on them. One thread, not a pool: the
store's connection is used by exactly one thread, so calls run in the order they were made and
a commit never races a claim.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence, TypeVar

from appliance.protocol import Input
from gateway.jobs.model import Claim, ItemResult, Job, JobStatus, NewJob
from gateway.jobs.store import JobStore

R = TypeVar("R")


class ThreadedStore:
    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job-store")

    async def _call(self, fn: Callable[..., R], *args: Any) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def submit(self, job: NewJob, inputs: Sequence[Input]) -> Job:
        return await self._call(self.store.submit, job, inputs)

    async def get(self, job_id: str) -> Job | None:
        return await self._call(self.store.get, job_id)

    async def list(self, status: JobStatus | None, limit: int) -> list[Job]:
        return await self._call(self.store.list, status, limit)

    async def counts(self) -> dict[JobStatus, int]:
        return await self._call(self.store.counts)

    async def oldest_pending_age(self, now: float) -> float | None:
        return await self._call(self.store.oldest_pending_age, now)

    async def claim(self, now: float) -> Claim | None:
        return await self._call(self.store.claim, now)

    async def commit(self, claim: Claim, items: Sequence[ItemResult], now: float) -> Job:
        return await self._call(self.store.commit, claim, items, now)

    async def release(self, claim: Claim, now: float, retry_at: float) -> None:
        await self._call(self.store.release, claim, now, retry_at)

    async def cancel(self, job_id: str, now: float) -> Job | None:
        return await self._call(self.store.cancel, job_id, now)

    async def results(self, job_id: str, offset: int, limit: int | None) -> list[ItemResult]:
        return await self._call(self.store.results, job_id, offset, limit)

    async def recover(self) -> int:
        return await self._call(self.store.recover)

    async def expire(self, now: float) -> int:
        return await self._call(self.store.expire, now)

    async def close(self) -> None:
        await self._call(self.store.close)
        self._thread.shutdown(wait=True)
