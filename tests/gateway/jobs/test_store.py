"""``gateway/jobs/store.py``: the SQLite job store, on real files in tmp_path.

Every vector a test commits is ``vector_of(index)``: four float32 copies of the item's index, so a
result read back says by itself which item it belongs to. Crashes are real: a child process is
SIGKILLed, then the test reopens the file it left behind.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pytest

from appliance.protocol import Input
from gateway.jobs.model import Claim, ItemResult, Job, NewJob
from gateway.jobs.store import JobStore, SqliteJobStore, StoreError

REPO = Path(__file__).resolve().parents[3]
TTL = 3600.0
T0 = 1_000_000.0  # the tests' clock starts here


class Clock:
    """What the store reads as "now" in submit; tests move it by hand."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


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


# -- the life of a job ---------------------------------------------------------------------------


def test_submit_claim_commit_to_success(store: SqliteJobStore) -> None:
    assert isinstance(store, JobStore)
    job = store.submit(embed_job(3, truncate=True, dimensions=2), texts(10))
    assert (job.status, job.total, job.chunks, job.done, job.failed) == ("PENDING", 10, 4, 0, 0)
    assert (job.created, job.started, job.finished, job.expires) == (T0, None, None, None)
    assert store.get(job.id) == job and len(job.id) == 32

    failing = frozenset({4, 9})
    committed: list[ItemResult] = []
    progress = [0]
    for chunk, (start, end) in enumerate([(0, 3), (3, 6), (6, 9), (9, 10)]):
        claim = store.claim(T0 + 10 + chunk)
        assert claim is not None
        assert (claim.chunk, claim.start, claim.end, claim.attempts) == (chunk, start, end, 0)
        assert claim.inputs == texts(10)[start:end]
        assert claim.job.status == "PROCESSING" and claim.job.started == T0 + 10  # the first claim's time
        items = answer(claim, failing)
        after = store.commit(claim, items, T0 + 20 + chunk)
        committed += items
        progress.append(after.done + after.failed)
        assert after.failed == len(failing & set(range(end)))
        assert store.get(job.id) == after
    assert progress == sorted(progress) and progress[-1] == 10  # never backwards

    final = store.get(job.id)
    assert final is not None
    assert (final.status, final.done, final.failed, final.error) == ("SUCCESS", 8, 2, None)
    assert (final.finished, final.expires) == (T0 + 23, T0 + 23 + TTL)
    assert final.options == {"truncate": True, "dimensions": 2}
    assert store.claim(T0 + 100) is None
    assert store.results(job.id) == committed
    for offset, limit in [(0, 4), (4, 4), (8, 4), (3, None), (10, 5), (0, 0)]:
        end = len(committed) if limit is None else offset + limit
        assert store.results(job.id, offset, limit) == committed[offset:end]
    errors = [r for r in committed if r.error_type is not None]
    assert [(r.index, r.error_message, r.vector) for r in errors] == [(4, "item 4 is too long", None),
                                                                     (9, "item 9 is too long", None)]  # fmt: skip


def test_results_of_a_running_job_are_the_committed_ones(store: SqliteJobStore) -> None:
    job = store.submit(embed_job(2), texts(6))
    first, second = store.claim(T0), store.claim(T0)
    assert first is not None and second is not None
    store.commit(second, answer(second), T0)  # chunks may be committed out of order
    assert [r.index for r in store.results(job.id)] == [2, 3]
    store.commit(first, answer(first), T0)
    assert [r.index for r in store.results(job.id, offset=1, limit=2)] == [1, 2]
    assert store.results("no-such-job") == []


def test_rerank_scores_round_trip(store: SqliteJobStore) -> None:
    job = store.submit(NewJob("rerank", "cross", {"query": "what is it?"}, 4), ["doc a", "doc b"])
    claim = store.claim(T0)
    assert claim is not None and claim.job.options == {"query": "what is it?"}
    items = [ItemResult(0, None, 0.25, 5, None, None), ItemResult(1, None, -1.5, 6, None, None)]
    assert store.commit(claim, items, T0).status == "SUCCESS"
    assert store.results(job.id) == items


def test_a_job_whose_every_item_failed_is_a_failure(store: SqliteJobStore) -> None:
    job = store.submit(embed_job(2), texts(3))
    for claim in iter(lambda: store.claim(T0), None):
        store.commit(claim, answer(claim, frozenset(range(3))), T0)
    final = store.get(job.id)
    assert final is not None
    assert (final.status, final.done, final.failed) == ("FAILURE", 0, 3)
    assert final.error == "every item failed; the first: input_too_long: item 0 is too long"


def test_inputs_round_trip_exactly(store: SqliteJobStore) -> None:
    inputs: list[Input] = ["[1, 2]", [1, 2], "héllo wörld, 日本語, 🙂", [], "", [0, 2**31 - 1, 5],
                           "\ud800 a lone surrogate", "2", [2], "null"]  # fmt: skip
    store.submit(embed_job(4), inputs)
    claimed: list[Input] = []
    while (claim := store.claim(T0)) is not None:
        claimed += claim.inputs
        store.commit(claim, answer(claim), T0)
    assert claimed == inputs
    assert [type(x) for x in claimed] == [type(x) for x in inputs]  # "[1, 2]" stays text, [1, 2] ids


def test_the_older_jobs_chunks_come_first(store: SqliteJobStore, clock: Clock) -> None:
    older = store.submit(embed_job(2), texts(4))
    clock.now += 1
    newer = store.submit(embed_job(2), texts(4, seed=1))
    first = store.claim(T0 + 5)
    assert first is not None
    clock.now += 1
    newest = store.submit(embed_job(2), texts(2, seed=2))  # submitted while the older one runs
    order = [(c.job.id, c.chunk) for c in [first, *run_to_end(store, T0 + 5)]]
    assert order == [(older.id, 0), (older.id, 1), (newer.id, 0), (newer.id, 1), (newest.id, 0)]


# -- commits that must write nothing ---------------------------------------------------------------


def test_committing_a_chunk_twice_writes_once(store: SqliteJobStore) -> None:
    job = store.submit(embed_job(3), texts(6))
    claim = store.claim(T0)
    assert claim is not None
    once = store.commit(claim, answer(claim), T0 + 1)
    twice = store.commit(claim, answer(claim, frozenset({0})), T0 + 2)  # a different answer, even
    assert once == twice and (twice.done, twice.failed) == (3, 0)
    assert store.results(job.id) == answer(claim)
    run_to_end(store, T0 + 3)
    final = store.get(job.id)
    assert final is not None and final.status == "SUCCESS"
    assert store.commit(claim, answer(claim), T0 + 4) == final  # after the job finished, too
    assert_every_index_once(store, final)


def test_a_commit_after_cancel_writes_nothing(store: SqliteJobStore) -> None:
    job = store.submit(embed_job(3), texts(6))
    claim = store.claim(T0)
    assert claim is not None
    cancelled = store.cancel(job.id, T0 + 1)
    assert cancelled is not None and cancelled.status == "CANCELLED"
    assert store.commit(claim, answer(claim), T0 + 2) == cancelled
    assert store.results(job.id) == []
    assert store.claim(T0 + 3) is None


def test_a_commit_for_a_deleted_job_raises_key_error(store: SqliteJobStore) -> None:
    job = store.submit(embed_job(3), texts(6))
    claim = store.claim(T0)
    assert claim is not None
    store.cancel(job.id, T0)
    assert store.expire(T0 + TTL + 1) == 1
    with pytest.raises(KeyError):
        store.commit(claim, answer(claim), T0 + TTL + 2)


@pytest.mark.parametrize(
    "items",
    [
        pytest.param(lambda c: answer(c)[:-1], id="an item missing"),
        pytest.param(lambda c: answer(c) + answer(c)[:1], id="an item twice"),
        pytest.param(lambda c: [ItemResult(i + 1, vector_of(i), None, 1, None, None) for i in range(3)], id="shifted"),
        pytest.param(lambda c: [ItemResult(i, vector_of(i), None, 1, "x", "y") for i in range(3)], id="both"),
        pytest.param(lambda c: [ItemResult(i, None, None, 1, None, None) for i in range(3)], id="neither"),
    ],
)  # fmt: skip
def test_a_commit_that_does_not_answer_each_item_once_is_refused(store: SqliteJobStore, items) -> None:  # noqa: ANN001
    job = store.submit(embed_job(3), texts(6))
    claim = store.claim(T0)
    assert claim is not None
    with pytest.raises(ValueError):
        store.commit(claim, items(claim), T0)
    assert store.results(job.id) == [] and store.get(job.id).done == 0  # type: ignore[union-attr]
    store.commit(claim, answer(claim), T0)  # the chunk is still running: a right answer goes in
    assert store.get(job.id).done == 3  # type: ignore[union-attr]


def test_submit_refuses_an_empty_job_or_a_chunk_size_below_one(store: SqliteJobStore) -> None:
    with pytest.raises(ValueError):
        store.submit(embed_job(4), [])
    with pytest.raises(ValueError):
        store.submit(embed_job(0), texts(3))
    assert store.list() == []


# -- back-off and recovery -------------------------------------------------------------------------


def test_release_backs_off_and_keeps_attempts(store: SqliteJobStore) -> None:
    job = store.submit(embed_job(2), texts(4))
    claim = store.claim(T0)
    assert claim is not None and (claim.chunk, claim.attempts) == (0, 0)
    store.release(claim, T0 + 1, retry_at=T0 + 10)
    later = store.claim(T0 + 2)  # chunk 0 waits: the next claimable chunk goes meanwhile
    assert later is not None and later.chunk == 1
    assert store.claim(T0 + 9.999) is None
    again = store.claim(T0 + 10)
    assert again is not None and (again.chunk, again.attempts) == (0, 1)
    store.release(again, T0 + 11, retry_at=T0 + 20)
    third = store.claim(T0 + 20)
    assert third is not None and (third.chunk, third.attempts) == (0, 2)
    store.commit(third, answer(third), T0 + 21)
    store.commit(later, answer(later), T0 + 22)
    final = store.get(job.id)
    assert final is not None and final.status == "SUCCESS"
    assert_every_index_once(store, final)


def test_release_of_a_committed_chunk_changes_nothing(store: SqliteJobStore) -> None:
    store.submit(embed_job(2), texts(4))
    claim = store.claim(T0)
    assert claim is not None
    store.commit(claim, answer(claim), T0)
    store.release(claim, T0, retry_at=T0)
    rest = run_to_end(store, T0)
    assert [c.chunk for c in rest] == [1]


def test_recover_after_an_abandoned_connection(db_path: Path, clock: Clock) -> None:
    first = SqliteJobStore(db_path, ttl_s=TTL, clock=clock)
    job = first.submit(embed_job(2), texts(6))
    done = first.claim(T0)
    lost = first.claim(T0)
    assert done is not None and lost is not None
    first.commit(done, answer(done), T0)
    # `first` is abandoned, never closed, as a crashed process leaves it
    with SqliteJobStore(db_path, ttl_s=TTL, clock=clock) as second:
        assert second.claim(T0 + 1) is not None  # chunk 2, still pending; then nothing but the lost one
        assert second.claim(T0 + 1) is None
        assert second.recover() == 2  # the lost chunk and the one just claimed: both running
        claims = run_to_end(second, T0 + 2)
        assert [(c.chunk, c.attempts) for c in claims] == [(1, 1), (2, 1)]  # never chunk 0 again
        final = second.get(job.id)
        assert final is not None and final.status == "SUCCESS"
        assert_every_index_once(second, final)
    first.close()


def test_recover_after_a_close_without_commit(db_path: Path) -> None:
    with SqliteJobStore(db_path, ttl_s=TTL) as first:
        job = first.submit(embed_job(5), texts(10))
        claim = first.claim(T0)
        assert claim is not None and claim.chunk == 0
    with SqliteJobStore(db_path, ttl_s=TTL) as second:
        assert second.recover() == 1 and second.recover() == 0
        again = second.claim(T0)
        assert again is not None and (again.chunk, again.attempts, again.inputs) == (0, 1, claim.inputs)
        assert second.get(job.id).status == "PROCESSING"  # type: ignore[union-attr]


# -- real crashes ----------------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    from gateway.jobs.model import ItemResult, NewJob
    from gateway.jobs.store import SqliteJobStore

    path, total, chunk_size, commits = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    store = SqliteJobStore(path, ttl_s=3600)
    job = store.submit(NewJob("embed", "mini", {}, chunk_size), [f"text {i}" for i in range(total)])
    print("job", job.id, flush=True)
    n = 0
    while commits < 0 or n < commits:  # commits < 0: commit until killed
        claim = store.claim(time.time())
        items = [ItemResult(i, np.full(4, i, dtype="<f4").tobytes(), None, 1, None, None)
                 for i in range(claim.start, claim.end)]
        store.commit(claim, items, time.time())
        n += 1
        print("committed", n, flush=True)
    claim = store.claim(time.time())  # claimed, never committed
    print("claimed", claim.chunk, flush=True)
    time.sleep(120)
""")


class Child:
    """The child process and its stdout, read line by line by a thread so that every wait has a
    bound (select() on a buffered pipe can miss lines already in the buffer)."""

    def __init__(self, tmp_path: Path, db_path: Path, total: int, chunk_size: int, commits: int) -> None:
        script = tmp_path / "child.py"
        script.write_text(CHILD)
        args = [sys.executable, str(script), str(db_path), str(total), str(chunk_size), str(commits)]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True,
                                        env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put("")  # end of output

    def line(self, timeout: float = 30.0) -> list[str]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the child said nothing for {timeout} s") from None
        assert line, f"the child exited early, with {self.process.wait(5)}"
        return line.split()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(10) == -signal.SIGKILL


def test_a_sigkilled_runner_loses_only_its_uncommitted_chunk(tmp_path: Path, db_path: Path) -> None:
    child = Child(tmp_path, db_path, total=95, chunk_size=10, commits=4)
    try:
        _, job_id = child.line()
        assert [child.line() for _ in range(4)] == [["committed", str(n)] for n in range(1, 5)]
        assert child.line() == ["claimed", "4"]
    finally:
        child.kill()
    with SqliteJobStore(db_path, ttl_s=TTL) as store:
        job = store.get(job_id)
        assert job is not None and (job.status, job.done, job.failed) == ("PROCESSING", 40, 0)
        assert [r.index for r in store.results(job_id)] == list(range(40))
        assert store.claim(time.time()).chunk == 5  # type: ignore[union-attr]  # chunk 4 is running
        assert store.recover() == 2  # chunk 4 (the child's) and chunk 5 (just now)
        claims = run_to_end(store, time.time())
        assert [c.chunk for c in claims] == list(range(4, 10))
        final = store.get(job_id)
        assert final is not None and (final.status, final.done) == ("SUCCESS", 95)
        assert_every_index_once(store, final)


def test_a_kill_anywhere_in_a_stream_of_commits_leaves_whole_chunks(tmp_path: Path, db_path: Path) -> None:
    chunk_size = 10
    child = Child(tmp_path, db_path, total=20_000, chunk_size=chunk_size, commits=-1)
    try:
        _, job_id = child.line()
        for _ in range(50):
            child.line()
    finally:
        child.kill()  # somewhere in a claim, a commit, or between them
    with SqliteJobStore(db_path, ttl_s=TTL) as store:
        job = store.get(job_id)
        assert job is not None and job.done >= 50 * chunk_size and job.done % chunk_size == 0
        indexes = [r.index for r in store.results(job_id)]
        assert indexes == list(range(job.done))  # whole chunks, in claim order, each index once
        assert store.recover() in (0, 1)
        run_to_end(store, time.time())
        final = store.get(job_id)
        assert final is not None and (final.status, final.done) == ("SUCCESS", 20_000)
        assert_every_index_once(store, final)


# -- ending jobs, and the overview -----------------------------------------------------------------


def test_cancel(store: SqliteJobStore) -> None:
    job = store.submit(embed_job(2), texts(6))
    claim = store.claim(T0)
    assert claim is not None
    store.commit(claim, answer(claim), T0 + 1)
    cancelled = store.cancel(job.id, T0 + 2)
    assert cancelled is not None
    assert (cancelled.status, cancelled.done, cancelled.finished, cancelled.expires) == ("CANCELLED", 2, T0 + 2,
                                                                                        T0 + 2 + TTL)  # fmt: skip
    assert store.get(job.id) == cancelled
    assert store.claim(T0 + 3) is None  # the pending chunks are gone
    assert [r.index for r in store.results(job.id)] == [0, 1]  # what was committed stays readable
    assert store.cancel(job.id, T0 + 4) == cancelled  # finished: unchanged
    assert store.cancel("no-such-job", T0) is None


def test_cancel_of_a_finished_job_changes_nothing(store: SqliteJobStore) -> None:
    job = store.submit(embed_job(2), texts(2))
    run_to_end(store, T0)
    done = store.get(job.id)
    assert done is not None and store.cancel(job.id, T0 + 9) == done and done.status == "SUCCESS"


def test_fail_ends_a_job_with_a_job_level_error(store: SqliteJobStore) -> None:
    job = store.submit(embed_job(2), texts(4))
    claim = store.claim(T0)
    assert claim is not None
    failed = store.fail(job.id, "model mini is no longer served", T0 + 1)
    assert failed is not None and (failed.status, failed.error, failed.expires) == (
        "FAILURE", "model mini is no longer served", T0 + 1 + TTL)  # fmt: skip
    assert store.commit(claim, answer(claim), T0 + 2) == failed and store.claim(T0 + 2) is None
    assert store.fail(job.id, "again", T0 + 3) == failed and store.fail("no-such-job", "x", T0) is None


def test_counts_list_and_oldest_pending_age(store: SqliteJobStore, clock: Clock) -> None:
    assert store.counts() == dict.fromkeys(["PENDING", "PROCESSING", "SUCCESS", "FAILURE", "CANCELLED"], 0)
    assert store.oldest_pending_age(T0) is None
    jobs = []
    for n in range(5):
        jobs.append(store.submit(embed_job(1), texts(1, seed=n)))
        clock.now += 10
    succeeded = store.claim(T0 + 100)  # job 0
    assert succeeded is not None and succeeded.job.id == jobs[0].id
    store.commit(succeeded, answer(succeeded), T0 + 100)
    store.cancel(jobs[1].id, T0 + 100)
    store.claim(T0 + 100)  # job 2 PROCESSING; 3 and 4 PENDING
    assert store.counts() == {"PENDING": 2, "PROCESSING": 1, "SUCCESS": 1, "FAILURE": 0, "CANCELLED": 1}
    assert [j.id for j in store.list()] == [j.id for j in reversed(jobs)]  # newest first
    assert [j.id for j in store.list(limit=2)] == [jobs[4].id, jobs[3].id]
    assert [j.id for j in store.list("PENDING")] == [jobs[4].id, jobs[3].id]
    assert [j.id for j in store.list("CANCELLED")] == [jobs[1].id]
    assert store.list("FAILURE") == []
    assert store.oldest_pending_age(T0 + 100) == pytest.approx(80.0)  # job 2, created at T0 + 20


def test_expire_deletes_jobs_and_reclaims_space(store: SqliteJobStore) -> None:
    big = store.submit(embed_job(100), [f"{i} " * 50 for i in range(2000)])
    for claim in iter(lambda: store.claim(T0), None):
        store.commit(claim, [ItemResult(i, bytes(1024), None, 1, None, None) for i in range(claim.start, claim.end)],
                     T0 + 10)  # fmt: skip
    kept = store.submit(embed_job(2), texts(2))  # unfinished: never expires
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    assert store.expire(T0 + 10 + TTL) == 0  # not before its time
    assert store.get(big.id) is not None
    assert store.expire(T0 + 10 + TTL + 1) == 1
    assert store.get(big.id) is None and store.results(big.id) == [] and store.get(kept.id) == kept
    after = store._db.execute("PRAGMA page_count").fetchone()[0]
    assert after < pages / 4  # the file gave the freed pages back
    assert store.counts()["SUCCESS"] == 0 and [j.id for j in store.list()] == [kept.id]
    assert store.expire(T0 + 10**9) == 0  # unfinished jobs have no expiry
    assert [c.job.id for c in run_to_end(store, T0)] == [kept.id]


# -- opening ---------------------------------------------------------------------------------------


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


# -- size ------------------------------------------------------------------------------------------


def test_a_hundred_thousand_inputs_in_seconds(store: SqliteJobStore) -> None:
    inputs: Sequence[Input] = [f"input number {i}" if i % 3 else [i, i + 1, i + 2] for i in range(100_000)]
    started = time.perf_counter()
    job = store.submit(embed_job(64), inputs)
    submitted = time.perf_counter() - started
    claims = run_to_end(store, T0)
    elapsed = time.perf_counter() - started
    assert len(claims) == job.chunks == 1563
    assert [x for c in claims for x in c.inputs] == inputs
    final = store.get(job.id)
    assert final is not None and (final.status, final.done) == ("SUCCESS", 100_000)
    assert [r.index for r in store.results(job.id, offset=99_990)] == list(range(99_990, 100_000))
    assert submitted < 10 and elapsed < 30, (submitted, elapsed)  # catches quadratic work, not a benchmark
