"""``gateway/jobs/sqlite_schema.py``: opening a job store. A file that is not a whole job store of
this build's schema is refused with a ``StoreError`` that names it; a good one reopens with the
settings it was created with.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from gateway.jobs.store import SqliteJobStore, StoreError
from store_checks import TTL, embed_job


def test_a_file_of_random_bytes_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    path.write_bytes(random.Random(7).randbytes(64 * 1024))
    with pytest.raises(StoreError, match=str(path)):
        SqliteJobStore(path, ttl_s=TTL)


def test_a_corrupt_store_is_refused_by_name(db_path: Path) -> None:
    with SqliteJobStore(db_path, ttl_s=TTL) as store:
        store.submit(embed_job(10), [f"{i} " * 100 for i in range(3000)])
    size = db_path.stat().st_size
    with db_path.open("r+b") as f:  # scribble over pages in the middle, leave the header
        f.seek(size // 2)
        f.write(random.Random(3).randbytes(8 * 4096))
    with pytest.raises(StoreError, match=str(db_path)):
        SqliteJobStore(db_path, ttl_s=TTL)


def test_an_unwritable_directory_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("a regular file, which no one (root included) can make a directory of")
    path = tmp_path / "afile" / "jobs.db"
    with pytest.raises(StoreError, match=str(path)):
        SqliteJobStore(path, ttl_s=TTL)


def test_another_database_or_schema_version_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(StoreError, match=f"{other}.*no job-store schema version"):
        SqliteJobStore(other, ttl_s=TTL)
    newer = tmp_path / "newer.db"
    SqliteJobStore(newer, ttl_s=TTL).close()
    with sqlite3.connect(newer) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match=f"{newer}.*schema version 99"):
        SqliteJobStore(newer, ttl_s=TTL)


def test_a_store_reopens_with_its_settings(db_path: Path) -> None:
    SqliteJobStore(db_path, ttl_s=TTL).close()
    with SqliteJobStore(db_path, ttl_s=TTL) as store:
        pragma = lambda name: store._db.execute(f"PRAGMA {name}").fetchone()[0]  # noqa: E731
        assert (pragma("journal_mode"), pragma("synchronous"), pragma("auto_vacuum")) == ("wal", 1, 2)

