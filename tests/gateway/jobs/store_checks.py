"""What the job-store tests share (``test_store.py``, ``test_store_crash.py``,
``test_store_open.py``): the clock they start from, the jobs they submit and the answers they
commit, and the checks on what a job ends with. The fixtures over them are in ``conftest.py``.

Every vector a test commits is ``vector_of(index)``: four float32 copies of the item's index, so a
result read back says by itself which item it belongs to.
"""

from __future__ import annotations

import random

import numpy as np

from appliance.protocol import Input
from gateway.jobs.model import Claim, ItemResult, Job, NewJob
from gateway.jobs.store import SqliteJobStore

TTL = 3600.0
T0 = 1_000_000.0  # the tests' clock starts here


class Clock:
    """What the store reads as "now" in submit; tests move it by hand."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def vector_of(index: int) -> bytes:
    return np.full(4, index, dtype="<f4").tobytes()


def texts(n: int, seed: int = 0) -> list[Input]:
    rng = random.Random(seed)
    return [f"text {i} {rng.random():.6f}" for i in range(n)]


def embed_job(chunk_size: int, **options: object) -> NewJob:
    return NewJob(task="embed", model="mini", options=dict(options), chunk_size=chunk_size)


def answer(claim: Claim, failing: frozenset[int] = frozenset()) -> list[ItemResult]:
    """A result for every item of the claim; the indexes in ``failing`` get an error instead."""
    return [
        ItemResult(i, None, None, 0, "input_too_long", f"item {i} is too long") if i in failing
        else ItemResult(i, vector_of(i), None, i % 7 + 1, None, None)
        for i in range(claim.start, claim.end)
    ]  # fmt: skip


def run_to_end(store: SqliteJobStore, now: float) -> list[Claim]:
    """Claim and commit until nothing is claimable; the claims, in order."""
    claims = []
    while (claim := store.claim(now)) is not None:
        store.commit(claim, answer(claim), now)
        claims.append(claim)
    return claims


def assert_every_index_once(store: SqliteJobStore, job: Job) -> None:
    results = store.results(job.id)
    assert [r.index for r in results] == list(range(job.total))
    assert all(r.vector == vector_of(r.index) for r in results if r.error_type is None)
