"""Fixtures of the job-store tests: a clock moved by hand, a path whose directory does not exist
yet, and a store opened on it (closed after the test)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from gateway.jobs.store import SqliteJobStore
from store_checks import TTL, Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "jobs.db"  # the directory does not exist yet: the store makes it


@pytest.fixture
def store(db_path: Path, clock: Clock) -> Iterator[SqliteJobStore]:
    with SqliteJobStore(db_path, ttl_s=TTL, clock=clock) as opened:
        yield opened
