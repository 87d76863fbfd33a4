"""A real worker computing on cores the gateway lent it (``workers/loop.py`` with
``workers/pinning.py``'s ``TorchThreads``): the same answers as on its own core, the widened
batches counted, the worker back on its own core and thread count after each of them, and loans
declined for a while after a pass that found its lent core busy (``workers/loans.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from appliance.config import ModelConfig
from appliance.protocol import Embed, Ready, Rerank, Scores, Stats, Vectors
from worker_under_test import WorkerUnderTest, running_worker
from workers.loans import MIN_BACKOFF_S

pytestmark = pytest.mark.slow

SPIN = "import os\nos.sched_setaffinity(0, {{{core}}})\nwhile True: pass"  # a process busy on one core
TEXTS = ["a lone request", "computed on every idle core", "and then back on its own"]


def own_and_spare() -> tuple[int, int]:
    """Two cores this process may use: the worker's own, and one to lend it."""
    allowed = sorted(os.sched_getaffinity(0))
    assert len(allowed) >= 2, f"lending cores needs two CPUs; this process may use only {allowed}"
    return allowed[0], allowed[1]


@pytest.fixture(scope="module")
def worker(tiny_transformer: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerUnderTest]:
    # float32: the widened pass splits its matrix products another way, which bf16 rounds differently
    model = ModelConfig(name="tiny", path=str(tiny_transformer), main=True, dtype="float32")
    own, _ = own_and_spare()
    with running_worker([model], "primary", tmp_path_factory.mktemp("lent"), cores=[own], borrows=True) as worker:
        worker.wait_for(Ready)
        yield worker


def counters_once(worker: WorkerUnderTest, batches: int, timeout: float = 30.0) -> Stats:
    """The first Stats that counts ``batches`` batches (a Stats comes every 0.2 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = worker.wait_for(Stats, timeout=timeout)
        assert isinstance(stats, Stats)
        if stats.counters.batches >= batches:
            return stats
    raise AssertionError(f"no Stats counting {batches} batches within {timeout}s")


def test_a_request_on_lent_cores_gets_the_same_vectors_and_is_counted_as_widened(worker: WorkerUnderTest) -> None:
    own, spare = own_and_spare()
    worker.send(Embed(1, "tiny", list(TEXTS)))
    alone = worker.wait_for(Vectors, id=1)
    worker.send(Embed(2, "tiny", list(TEXTS), spare_cores=[spare]))
    widened = worker.wait_for(Vectors, id=2)
    assert isinstance(alone, Vectors) and isinstance(widened, Vectors)
    np.testing.assert_allclose(widened.array(), alone.array(), rtol=1e-4, atol=1e-5)
    stats = counters_once(worker, batches=2)
    assert (stats.counters.widened_batches, stats.counters.threads) == (1, 1)
    assert os.sched_getaffinity(worker.process.pid) == {own}  # the main thread is back on its own core
    # the pass really ran on the lent core: a pool thread it started may run there
    assert any(spare in os.sched_getaffinity(tid) for tid in threads_of(worker.process.pid))


def test_a_rerank_on_lent_cores_scores_alike_and_a_loan_outside_this_machine_is_declined(
        worker: WorkerUnderTest) -> None:  # fmt: skip
    own, spare = own_and_spare()
    before = counters_once(worker, batches=0).counters
    if before.contended_loans:  # the box was busy during the last widened pass: wait out the backoff
        time.sleep(MIN_BACKOFF_S)
    worker.send(Rerank(3, "tiny", TEXTS[0], TEXTS[1:]))
    alone = worker.wait_for(Scores, id=3)
    worker.send(Rerank(4, "tiny", TEXTS[0], TEXTS[1:], spare_cores=[spare]))
    widened = worker.wait_for(Scores, id=4)
    assert isinstance(alone, Scores) and isinstance(widened, Scores)
    np.testing.assert_allclose(widened.array(), alone.array(), rtol=1e-4, atol=1e-5)
    # a core the kernel will not give this process: computed on the own core, not counted
    worker.send(Embed(5, "tiny", list(TEXTS), spare_cores=[os.cpu_count() or 1 << 10]))
    assert isinstance(worker.wait_for(Vectors, id=5), Vectors)
    after = counters_once(worker, batches=before.batches + 3).counters
    assert (after.widened_batches - before.widened_batches, after.threads) == (1, 1)
    assert os.sched_getaffinity(worker.process.pid) == {own}


def test_a_pass_that_finds_its_lent_core_busy_makes_the_worker_decline_loans_for_a_while(
        tiny_transformer: Path, tmp_path: Path) -> None:  # fmt: skip
    own, spare = own_and_spare()
    model = ModelConfig(name="tiny", path=str(tiny_transformer), main=True, dtype="float32")
    # a worker of its own: the shared one may be backing off after passes a busy box slowed
    with running_worker([model], "primary", tmp_path, cores=[own], borrows=True) as worker:
        worker.wait_for(Ready)
        busy_lent_core_passes(worker, spare)


def busy_lent_core_passes(worker: WorkerUnderTest, spare: int) -> None:
    before = counters_once(worker, batches=0).counters
    spinner = subprocess.Popen([sys.executable, "-c", SPIN.format(core=spare)])
    try:
        time.sleep(0.5)  # the spinner holds the lent core
        for i in range(6):  # long enough passes that a thread waiting for the core shows
            worker.send(Embed(10 + i, "tiny", [" ".join(TEXTS * 8)] * 4, spare_cores=[spare]))
            assert isinstance(worker.wait_for(Vectors, id=10 + i), Vectors)
    finally:
        spinner.kill()
        spinner.wait(10)
    after = counters_once(worker, batches=before.batches + 6).counters
    assert after.contended_loans - before.contended_loans >= 1
    assert after.declined_loans - before.declined_loans >= 1  # the passes after it ran on the own core
    widened = after.widened_batches - before.widened_batches
    assert widened + (after.declined_loans - before.declined_loans) == 6


def threads_of(pid: int) -> list[int]:
    return [int(tid) for tid in os.listdir(f"/proc/{pid}/task") if int(tid) != pid]
