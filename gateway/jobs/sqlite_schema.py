"""The SQLite job store's file: its tables, how it is opened and checked, how rows become values.

Tables (``job`` is the job's ``seq``, a small integer key, rather than its 32-character id)::

    jobs     seq (creation order) | id | task, model, options | status, progress, times
    inputs   (job, idx) -> kind, data      kind 0: text as UTF-8; 1: token ids as msgpack
    chunks   (job, chunk) -> state, attempts, not_before, claimed_at
    results  (job, idx) -> vector | score | error, tokens

A chunk's items are ``chunk * chunk_size <= idx < min((chunk + 1) * chunk_size, total)``: derived,
not stored. Rows are deleted explicitly (``SqliteJobStore.expire``), not by foreign-key cascades:
one statement per table over an indexed key, and no per-row parent check on the 100,000-row
inserts of a submit.

``connect`` opens a file only once it is whole (``quick_check``) and holds this build's schema
version, or a new one it creates; anything else is a ``StoreError`` that names the path.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Sequence

import msgspec

from appliance.protocol import Input
from gateway.jobs.interface import StoreError
from gateway.jobs.model import Job

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE jobs (
    seq        INTEGER PRIMARY KEY,  -- above every stored job's: claim's "oldest job first"
    id         TEXT NOT NULL UNIQUE,
    task       TEXT NOT NULL,
    model      TEXT NOT NULL,
    options    TEXT NOT NULL,        -- JSON
    status     TEXT NOT NULL,
    total      INTEGER NOT NULL,
    done       INTEGER NOT NULL DEFAULT 0,
    failed     INTEGER NOT NULL DEFAULT 0,
    chunks     INTEGER NOT NULL,
    chunk_size INTEGER NOT NULL,
    created    REAL NOT NULL,
    started    REAL,
    finished   REAL,
    error      TEXT,
    expires    REAL
);
CREATE INDEX jobs_status ON jobs (status, seq);
CREATE INDEX jobs_expires ON jobs (expires) WHERE expires IS NOT NULL;

CREATE TABLE inputs (
    job  INTEGER NOT NULL,
    idx  INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (job, idx)
);

-- Small rows, always looked up by (job, chunk): stored in that key's order, no rowid.
CREATE TABLE chunks (
    job        INTEGER NOT NULL,
    chunk      INTEGER NOT NULL,
    state      TEXT NOT NULL DEFAULT 'pending',  -- pending | running | done
    attempts   INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,          -- back-off: not claimable before
    claimed_at REAL,
    PRIMARY KEY (job, chunk)
) WITHOUT ROWID;
-- claim walks only pending chunks, already in (oldest job, first chunk) order.
CREATE INDEX chunks_pending ON chunks (job, chunk, not_before) WHERE state = 'pending';

CREATE TABLE results (
    job           INTEGER NOT NULL,
    idx           INTEGER NOT NULL,
    vector        BLOB,
    score         REAL,
    tokens        INTEGER NOT NULL,
    error_type    TEXT,
    error_message TEXT,
    PRIMARY KEY (job, idx)  -- paging by idx; a second insert of an item fails loudly
);
"""

# The columns of ``jobs`` that make a ``Job``, in its field order (``job_of`` reads a row of them).
JOB_COLUMNS = ("id, task, model, options, status, total, done, failed, chunks, chunk_size, "
               "created, started, finished, error, expires")  # fmt: skip

_TEXT, _IDS = 0, 1  # inputs.kind: the text "[1, 2]" and the ids [1, 2] never meet
_ids_encoder = msgspec.msgpack.Encoder()
_ids_decoder = msgspec.msgpack.Decoder(list[int])


# -- opening ----------------------------------------------------------------------------------


def connect(path: Path) -> sqlite3.Connection:
    """Open (or create) the store at ``path``, or raise ``StoreError`` naming it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"job store {path}: cannot create its directory {path.parent}: {exc}") from exc
    db: sqlite3.Connection | None = None
    try:
        # check_same_thread=False: one dedicated thread makes every call, but it need not be the
        # thread that opened the store. isolation_level=None: transactions are ours (BEGIN IMMEDIATE).
        db = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
        _configure(db)
        _check_integrity(db, path)
        _ensure_schema(db, path)
        return db
    except sqlite3.Error as exc:
        if db is not None:
            db.close()
        raise StoreError(f"job store {path}: cannot be opened: {exc}") from exc
    except StoreError:
        if db is not None:
            db.close()
        raise


def _configure(db: sqlite3.Connection) -> None:
    # Only takes effect on a new, empty file, before the first table: see SqliteJobStore._vacuum.
    db.execute("PRAGMA auto_vacuum = INCREMENTAL")
    mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise sqlite3.OperationalError(f"journal_mode is {mode!r}, not 'wal'")
    # In WAL mode, NORMAL loses no committed transaction when the PROCESS dies, SIGKILL included:
    # the WAL is in the OS page cache, which outlives the process. Only a power loss or kernel
    # crash can roll back the last transactions (never corrupt the file), and that is not the
    # promise; FULL would fsync every chunk's commit for it.
    db.execute("PRAGMA synchronous = NORMAL")
    # A submit of 200,000 inputs grows the WAL to hundreds of MB; truncate it back after checkpoints.
    db.execute("PRAGMA journal_size_limit = 67108864")


def _check_integrity(db: sqlite3.Connection, path: Path) -> None:
    # quick_check: every page readable and well formed, without integrity_check's index-vs-table
    # comparison; it reads the whole file once, about a second per GB.
    problems = [row[0] for row in db.execute("PRAGMA quick_check(5)")]
    if problems != ["ok"]:
        found = "; ".join(problems).replace("\n", "; ")
        raise StoreError(f"job store {path}: the file is corrupt: {found}")


def _ensure_schema(db: sqlite3.Connection, path: Path) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION:
        return
    if version != 0:
        raise StoreError(f"job store {path}: schema version {version}, this build reads {SCHEMA_VERSION}")
    if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
        raise StoreError(f"job store {path}: a database with tables but no job-store schema version")
    # One transaction: a crash mid-way leaves an empty file, which the next open starts over.
    db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")


# -- rows and values --------------------------------------------------------------------------


def job_of(row: Sequence[object]) -> Job:
    """A Job from a row of JOB_COLUMNS."""
    job = Job(*row)
    job.options = msgspec.json.decode(job.options)  # stored as JSON text
    return job


def encode_input(item: Input) -> tuple[int, bytes]:
    """``inputs.kind`` and ``inputs.data`` of one input."""
    if isinstance(item, str):
        # surrogatepass: a lone surrogate (legal in a JSON string) still round-trips exactly
        return _TEXT, item.encode("utf-8", "surrogatepass")
    return _IDS, _ids_encoder.encode(item)


def decode_input(kind: int, data: bytes) -> Input:
    return data.decode("utf-8", "surrogatepass") if kind == _TEXT else _ids_decoder.decode(data)
