"""The plain types of async bulk jobs: what a client submits, what the store answers.

No behaviour lives here; the store (``store.py``) gives these their meaning. They are msgspec
Structs so the routes can encode a ``Job`` straight into a response body.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from appliance.protocol import Input

JobStatus = Literal["PENDING", "PROCESSING", "SUCCESS", "FAILURE", "CANCELLED"]
FINISHED: frozenset[JobStatus] = frozenset({"SUCCESS", "FAILURE", "CANCELLED"})
STATUSES: tuple[JobStatus, ...] = ("PENDING", "PROCESSING", "SUCCESS", "FAILURE", "CANCELLED")

JobTask = Literal["embed", "rerank"]


class NewJob(msgspec.Struct):
    """A job as submitted, before the store gives it an id."""

    task: JobTask
    model: str
    options: dict[str, Any]  # JSON-able: truncate, dimensions, normalize, a rerank's query...
    chunk_size: int  # inputs per chunk: the unit of work, of commit and of resumption


class Job(msgspec.Struct):
    """A job as stored. ``done + failed`` is how many items are committed; it never goes back."""

    id: str  # uuid4 hex
    task: JobTask
    model: str
    options: dict[str, Any]
    status: JobStatus
    total: int  # inputs
    done: int  # items with a result
    failed: int  # items with an error
    chunks: int  # ceil(total / chunk_size)
    chunk_size: int
    created: float  # epoch seconds, as are the three below
    started: float | None  # first claim
    finished: float | None
    error: str | None  # a job-level error (per-item errors live in the results)
    expires: float | None  # set when the job finishes: finished + the store's ttl


class Claim(msgspec.Struct):
    """One chunk handed to the runner: items ``start <= index < end`` of ``job``."""

    job: Job
    chunk: int
    start: int
    end: int
    inputs: list[Input]  # inputs[i] is the job's item start + i
    attempts: int  # times this chunk was claimed before this claim: 0 the first time


class ItemResult(msgspec.Struct, gc=False):
    """One item's outcome: a vector (embed) or a score (rerank), or else an error, never both."""

    index: int  # in the whole job
    vector: bytes | None = None  # raw little-endian float32
    score: float | None = None
    tokens: int = 0
    error_type: str | None = None
    error_message: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_type is None


class JobQueue(msgspec.Struct, kw_only=True):
    """The jobs' part of ``GET /queue-status``."""

    by_status: dict[str, int]
    oldest_pending_age_s: float | None  # the oldest unfinished job's age; null when none
    chunks_in_flight: int
    inputs_in_flight: int
