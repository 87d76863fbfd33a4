"""The job store's interface: ``JobStore``, and ``StoreError`` for a store that cannot be opened.

The runner and the routes see only ``JobStore``, so a store shared by several appliances can
replace SQLite without touching them. The interface is synchronous: the caller runs every call in
one dedicated thread (``threaded.py``).

The promise every store keeps is that nothing accepted is lost and nothing is computed into a
result twice: a job ``submit`` returned survives the process; ``commit`` stores a chunk's results
and its job's progress together or not at all; a chunk committed once is never handed out again.
``sqlite_store.py`` says how the SQLite store keeps it.
"""

from __future__ import annotations

import builtins
from typing import Protocol, Sequence, runtime_checkable

from appliance.protocol import Input
from appliance.startup import StartupError
from gateway.jobs.model import Claim, ItemResult, Job, JobStatus, NewJob


class StoreError(StartupError):
    """The job store cannot be opened; the message names the path and the reason."""


@runtime_checkable
class JobStore(Protocol):
    """Jobs, their inputs, chunks and results. Synchronous; one thread calls it."""

    def submit(self, job: NewJob, inputs: Sequence[Input]) -> Job:
        """Store a PENDING job (id: a new uuid4 hex), its inputs by index and its
        ceil(total / chunk_size) chunks, in one transaction."""
        ...

    def get(self, job_id: str) -> Job | None: ...

    def list(self, status: JobStatus | None = None, limit: int = 100) -> builtins.list[Job]:
        """Newest first."""
        ...

    def counts(self) -> dict[JobStatus, int]:
        """Jobs per status, every status a key."""
        ...

    def oldest_pending_age(self, now: float) -> float | None:
        """Seconds since the oldest unfinished job was created; None when none is."""
        ...

    def claim(self, now: float) -> Claim | None:
        """The next pending chunk (oldest job first, chunks in order) whose back-off has passed,
        marked running; its job PROCESSING. None when nothing is claimable."""
        ...

    def commit(self, claim: Claim, items: Sequence[ItemResult], now: float) -> Job:
        """In one transaction: the chunk's results, the chunk done, the job's progress; the job
        finished when it was the last chunk. A chunk already done, or of a job cancelled
        meanwhile, writes nothing and returns the job as it is; KeyError if the job is gone;
        ValueError, writing nothing, unless ``items`` hold exactly one result per item of the chunk."""
        ...

    def release(self, claim: Claim, now: float, retry_at: float) -> None:
        """The chunk back to pending, not claimable before ``retry_at``; attempts kept."""
        ...

    def cancel(self, job_id: str, now: float) -> Job | None:
        """An unfinished job CANCELLED and its pending chunks dropped; a finished one returned
        unchanged; None if unknown."""
        ...

    def results(self, job_id: str, offset: int = 0, limit: int | None = None) -> builtins.list[ItemResult]:
        """Committed results by index ascending; ``offset`` counts committed results."""
        ...

    def recover(self) -> int:
        """At start: every running chunk back to pending (its work died with the last run)."""
        ...

    def expire(self, now: float) -> int:
        """Delete the jobs whose ``expires`` < now, with all they hold; how many."""
        ...

    def close(self) -> None: ...
