"""``gateway/jobs/store.py``: what a job store does, through the ``JobStore`` interface, on the
SQLite store (``sqlite_store.py``) over real files in tmp_path.

A job's life from submit to its results, the commits that must write nothing, back-off, ending
jobs and the overview, and the size a submit must handle. Crashes and recovery are
``test_store_crash.py``'s; opening a file, ``test_store_open.py``'s.
"""

from __future__ import annotations

import time
from typing import Sequence

import pytest

from appliance.protocol import Input
from gateway.jobs.model import ItemResult, NewJob
from gateway.jobs.store import JobStore, SqliteJobStore
from store_checks import T0, TTL, Clock, answer, assert_every_index_once, embed_job, run_to_end, texts, vector_of


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


# -- back-off --------------------------------------------------------------------------------------


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
