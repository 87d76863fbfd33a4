"""``SqliteJobStore``: the ``JobStore`` in one SQLite file under the appliance's ``state_dir``.

It keeps the interface's promise (nothing accepted is lost, nothing computed into a result twice)
with transactions:

- ``submit`` stores the job, every input and every chunk in one transaction: once it returns, the
  job survives the process (see ``sqlite_schema._configure`` for what ``synchronous=NORMAL``
  promises).
- ``commit`` writes a chunk's results, marks the chunk done and adds to the job's progress in ONE
  transaction, so after any crash the results on disk are exactly those of the done chunks.
- A chunk is pending, running (claimed) or done. ``recover`` at start turns running chunks back to
  pending: a restart lost whatever was computing them. A done chunk is never handed out again,
  and committing one again writes nothing.

The tables, and how the file is opened and checked, are ``sqlite_schema.py``'s.
"""

from __future__ import annotations

import builtins
import sqlite3
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Callable, Iterator, Sequence

import msgspec

from appliance.protocol import Input
from gateway.jobs.model import FINISHED, STATUSES, Claim, ItemResult, Job, JobStatus, NewJob
from gateway.jobs.sqlite_schema import JOB_COLUMNS, connect, decode_input, encode_input, job_of

# A sweep returns at most this many free pages (64 MiB at 4 KiB) to the file system, so one sweep
# after a huge expiry cannot hold the store's thread, and with it every claim, for long; the next
# sweeps return the rest.
VACUUM_PAGES = 16384


class SqliteJobStore:
    """``JobStore`` in one SQLite file under the appliance's ``state_dir``."""

    def __init__(self, path: str | Path, ttl_s: float, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.ttl_s = ttl_s
        self._clock = clock  # only ``submit`` reads it (``created``); every other call gets ``now``
        self._db = connect(self.path)

    # -- submitting and reading ------------------------------------------------------------

    def submit(self, job: NewJob, inputs: Sequence[Input]) -> Job:
        _check_new(job, inputs)
        new = Job(id=uuid.uuid4().hex, task=job.task, model=job.model, options=job.options,
                  status="PENDING", total=len(inputs), done=0, failed=0,
                  chunks=-(-len(inputs) // job.chunk_size), chunk_size=job.chunk_size,
                  created=self._clock(), started=None, finished=None, error=None, expires=None)  # fmt: skip
        with self._transaction() as db:
            seq = db.execute(
                "INSERT INTO jobs (id, task, model, options, status, total, chunks, chunk_size, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (new.id, new.task, new.model, msgspec.json.encode(new.options).decode(), new.status, new.total,
                 new.chunks, new.chunk_size, new.created),
            ).lastrowid  # fmt: skip
            db.executemany("INSERT INTO inputs (job, idx, kind, data) VALUES (?, ?, ?, ?)",
                           ((seq, i, *encode_input(x)) for i, x in enumerate(inputs)))  # fmt: skip
            db.executemany("INSERT INTO chunks (job, chunk) VALUES (?, ?)", ((seq, c) for c in range(new.chunks)))
        return new

    def get(self, job_id: str) -> Job | None:
        found = self._find(job_id)
        return found[1] if found else None

    def list(self, status: JobStatus | None = None, limit: int = 100) -> builtins.list[Job]:
        if status is None:
            rows = self._db.execute(f"SELECT {JOB_COLUMNS} FROM jobs ORDER BY seq DESC LIMIT ?", (limit,))
        else:
            rows = self._db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE status = ? ORDER BY seq DESC LIMIT ?",
                                    (status, limit))  # fmt: skip
        return [job_of(row) for row in rows]

    def counts(self) -> dict[JobStatus, int]:
        counts: dict[JobStatus, int] = dict.fromkeys(STATUSES, 0)
        for status, n in self._db.execute("SELECT status, count(*) FROM jobs GROUP BY status"):
            counts[status] = n
        return counts

    def oldest_pending_age(self, now: float) -> float | None:
        (created,) = self._db.execute(
            "SELECT min(created) FROM jobs WHERE status IN ('PENDING', 'PROCESSING')").fetchone()
        return None if created is None else now - created

    def results(self, job_id: str, offset: int = 0, limit: int | None = None) -> builtins.list[ItemResult]:
        # OFFSET walks only the (job, idx) index: SQLite skips rows before it reads their columns.
        rows = self._db.execute(
            "SELECT idx, vector, score, tokens, error_type, error_message FROM results"
            " WHERE job = (SELECT seq FROM jobs WHERE id = ?) ORDER BY idx LIMIT ? OFFSET ?",
            (job_id, -1 if limit is None else limit, offset),
        )  # fmt: skip
        return [ItemResult(*row) for row in rows]

    # -- the runner's side ----------------------------------------------------------------

    def claim(self, now: float) -> Claim | None:
        with self._transaction() as db:
            row = db.execute(
                "SELECT job, chunk, attempts FROM chunks WHERE state = 'pending' AND not_before <= ?"
                " ORDER BY job, chunk LIMIT 1", (now,)).fetchone()  # fmt: skip
            if row is None:
                return None
            seq, chunk, attempts = row
            db.execute("UPDATE chunks SET state = 'running', attempts = attempts + 1, claimed_at = ?"
                       " WHERE job = ? AND chunk = ?", (now, seq, chunk))  # fmt: skip
            db.execute("UPDATE jobs SET status = 'PROCESSING', started = coalesce(started, ?) WHERE seq = ?",
                       (now, seq))  # fmt: skip
            job = job_of(db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE seq = ?", (seq,)).fetchone())
            start, end = _bounds(job, chunk)
            inputs = [decode_input(kind, data) for kind, data in db.execute(
                "SELECT kind, data FROM inputs WHERE job = ? AND idx >= ? AND idx < ? ORDER BY idx",
                (seq, start, end))]  # fmt: skip
        return Claim(job=job, chunk=chunk, start=start, end=end, inputs=inputs, attempts=attempts)

    def commit(self, claim: Claim, items: Sequence[ItemResult], now: float) -> Job:
        with self._transaction():
            found = self._find(claim.job.id)
            if found is None:
                raise KeyError(claim.job.id)
            seq, job = found
            # Done: committed already. Gone: cancelled meanwhile. Pending (released, not yet claimed
            # again) still takes it: its results are as good as the retry's would be.
            if job.status in FINISHED or self._chunk_state(seq, claim.chunk) in (None, "done"):
                return job
            _check_items(items, *_bounds(job, claim.chunk))
            job = self._write_chunk(seq, job, claim.chunk, items)
            if job.done + job.failed == job.total:  # every item has its one result: the last chunk
                job = self._finish(seq, job, now)
        return job

    def release(self, claim: Claim, now: float, retry_at: float) -> None:
        del now  # SQLite needs only retry_at; the interface passes now for stores that keep leases
        with self._transaction() as db:
            db.execute("UPDATE chunks SET state = 'pending', not_before = ?"
                       " WHERE job = (SELECT seq FROM jobs WHERE id = ?) AND chunk = ? AND state = 'running'",
                       (retry_at, claim.job.id, claim.chunk))  # fmt: skip

    def recover(self) -> int:
        # The attempt stays counted: an input that kills the whole appliance must not loop forever.
        with self._transaction() as db:
            return db.execute("UPDATE chunks SET state = 'pending' WHERE state = 'running'").rowcount

    # -- ending jobs ----------------------------------------------------------------------

    def cancel(self, job_id: str, now: float) -> Job | None:
        return self._stop(job_id, "CANCELLED", None, now)

    def fail(self, job_id: str, error: str, now: float) -> Job | None:
        """An unfinished job FAILURE with a job-level ``error`` (say its model is no longer
        served), its unfinished chunks dropped; a finished one unchanged; None if unknown.
        Not part of ``JobStore``: a helper the runner may use."""
        return self._stop(job_id, "FAILURE", error, now)

    def expire(self, now: float) -> int:
        with self._transaction() as db:
            seqs = [(seq,) for (seq,) in db.execute("SELECT seq FROM jobs WHERE expires < ?", (now,))]
            for table in ("results", "inputs", "chunks", "jobs"):
                key = "seq" if table == "jobs" else "job"
                db.executemany(f"DELETE FROM {table} WHERE {key} = ?", seqs)
        self._vacuum()
        return len(seqs)

    def close(self) -> None:
        self._db.close()  # a second close is a no-op

    def __enter__(self) -> SqliteJobStore:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- helpers --------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front: a read-then-write (claim, commit) cannot be
        # overtaken between its read and its write.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # COMMIT itself can fail (disk full, a busy lock)
                self._db.execute("ROLLBACK")
            raise

    def _find(self, job_id: str) -> tuple[int, Job] | None:
        row = self._db.execute(f"SELECT seq, {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else (row[0], job_of(row[1:]))

    def _chunk_state(self, seq: int, chunk: int) -> str | None:
        row = self._db.execute("SELECT state FROM chunks WHERE job = ? AND chunk = ?", (seq, chunk)).fetchone()
        return None if row is None else row[0]

    def _write_chunk(self, seq: int, job: Job, chunk: int, items: Sequence[ItemResult]) -> Job:
        """The chunk's results in, the chunk done, the job's progress up: the job as it now is."""
        failed = sum(1 for item in items if not item.ok)
        self._db.executemany(
            "INSERT INTO results (job, idx, vector, score, tokens, error_type, error_message)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            ((seq, i.index, i.vector, i.score, i.tokens, i.error_type, i.error_message) for i in items),
        )  # fmt: skip
        self._db.execute("UPDATE chunks SET state = 'done' WHERE job = ? AND chunk = ?", (seq, chunk))
        self._db.execute("UPDATE jobs SET done = done + ?, failed = failed + ? WHERE seq = ?",
                         (len(items) - failed, failed, seq))  # fmt: skip
        return msgspec.structs.replace(job, done=job.done + len(items) - failed, failed=job.failed + failed)

    def _finish(self, seq: int, job: Job, now: float) -> Job:
        """The last chunk is in: SUCCESS, or FAILURE when not one item succeeded."""
        if job.done:
            return self._end(seq, job, "SUCCESS", None, now)
        first = self._db.execute("SELECT error_type, error_message FROM results WHERE job = ?"
                                 " AND error_type IS NOT NULL ORDER BY idx LIMIT 1", (seq,)).fetchone()  # fmt: skip
        return self._end(seq, job, "FAILURE", f"every item failed; the first: {first[0]}: {first[1]}", now)

    def _stop(self, job_id: str, status: JobStatus, error: str | None, now: float) -> Job | None:
        """An unfinished job ended as ``status`` before its last chunk, its unfinished chunks
        dropped; a finished one unchanged; None if unknown."""
        with self._transaction() as db:
            found = self._find(job_id)
            if found is None or found[1].status in FINISHED:
                return found[1] if found else None
            seq, job = found
            # Running chunks go too: their late commit then finds no chunk and writes nothing.
            db.execute("DELETE FROM chunks WHERE job = ? AND state != 'done'", (seq,))
            return self._end(seq, job, status, error, now)

    def _end(self, seq: int, job: Job, status: JobStatus, error: str | None, now: float) -> Job:
        expires = now + self.ttl_s
        self._db.execute("UPDATE jobs SET status = ?, error = ?, finished = ?, expires = ? WHERE seq = ?",
                         (status, error, now, expires, seq))  # fmt: skip
        return msgspec.structs.replace(job, status=status, error=error, finished=now, expires=expires)

    def _vacuum(self) -> None:
        """Give freed pages back to the file system.

        The database is created with auto_vacuum=INCREMENTAL: deleting rows only puts pages on
        the free list, and ``incremental_vacuum`` then truncates up to VACUUM_PAGES of them off
        the file. A full VACUUM would rewrite the whole file (twice its size on disk, the store
        locked meanwhile); leaving the free list alone would hold the disk at the high-water mark
        of the biggest burst of jobs forever.
        """
        # executescript, not execute: the module steps a row-less PRAGMA once, which frees one
        # page; executescript runs the statement to its end.
        self._db.executescript(f"PRAGMA incremental_vacuum({VACUUM_PAGES});")


# -- checks and bounds -------------------------------------------------------------------------


def _bounds(job: Job, chunk: int) -> tuple[int, int]:
    start = chunk * job.chunk_size
    return start, min(start + job.chunk_size, job.total)


def _check_new(job: NewJob, inputs: Sequence[Input]) -> None:
    if job.chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, not {job.chunk_size}")
    if not inputs:
        raise ValueError("a job needs at least one input")  # no chunk would ever finish it


def _check_items(items: Sequence[ItemResult], start: int, end: int) -> None:
    """Exactly one result per item of the chunk, each a value or an error: anything else would
    leave an item without a result, or finish the job with a count that lies."""
    if sorted(item.index for item in items) != list(range(start, end)):
        raise ValueError(f"a commit of items {start}..{end - 1} needs exactly one result for each")
    for item in items:
        if (item.vector is not None or item.score is not None) == (item.error_type is not None):
            raise ValueError(f"item {item.index}: set a vector or a score, or an error_type, exactly one")
