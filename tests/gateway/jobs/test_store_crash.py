"""``gateway/jobs/sqlite_store.py`` after a crash: a store reopened on the file a dead process
left behind loses only the chunks that were not committed, and ``recover`` hands them out again.

Crashes are real: a child process is SIGKILLed, then the test reopens the file it left behind.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from gateway.jobs.store import SqliteJobStore
from store_checks import T0, TTL, Clock, answer, assert_every_index_once, embed_job, run_to_end, texts

REPO = Path(__file__).resolve().parents[3]


# -- recovery --------------------------------------------------------------------------------------


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

