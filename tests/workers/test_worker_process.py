"""A real worker process on tiny random models, fed through a real shared-memory channel."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import msgspec
import numpy as np
import pytest

from appliance.config import ModelConfig
from appliance.ipc.channel import Channel
from appliance.protocol import (
    BACKGROUND,
    EXIT_LOAD_ERROR,
    Bye,
    Cancel,
    Drain,
    Embed,
    Failed,
    FailureKind,
    Ready,
    RequestCodec,
    Rerank,
    ResponseCodec,
    Scores,
    Stats,
    Vectors,
    WorkerSpec,
)

pytestmark = pytest.mark.slow

REQUESTS, RESPONSES = RequestCodec(), ResponseCodec()


class WorkerUnderTest:
    def __init__(self, spec: WorkerSpec, channel: Channel, process: subprocess.Popen[bytes]) -> None:
        self.spec, self.channel, self.process = spec, channel, process
        self.loop = asyncio.new_event_loop()
        self.inbox: list[object] = []
        self.channel.start_reader(self.loop, lambda records: self.inbox.extend(map(RESPONSES.decode, records)))

    def send(self, message: object) -> None:
        assert self.channel.send_request(REQUESTS.encode(message))

    def wait_for(self, kind: type, timeout: float = 60.0, **fields: object) -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, message in enumerate(self.inbox):
                if isinstance(message, kind) and all(getattr(message, k) == v for k, v in fields.items()):
                    return self.inbox.pop(i)
            assert self.process.poll() is None or kind is Bye, f"worker exited with {self.process.returncode}"
            self.loop.run_until_complete(asyncio.sleep(0.01))
        raise AssertionError(f"no {kind.__name__} {fields} within {timeout}s; got {self.inbox}")

    def answer_order(self, ids: set[int], timeout: float = 120.0) -> list[int]:
        """The ids of the answers to ``ids`` in the order they came, once all have come."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = [m.id for m in self.inbox if isinstance(m, (Vectors, Scores, Failed)) and m.id in ids]
            if set(seen) == ids:
                return seen
            assert self.process.poll() is None, f"worker exited with {self.process.returncode}"
            self.loop.run_until_complete(asyncio.sleep(0.01))
        raise AssertionError(f"not every one of {sorted(ids)} answered within {timeout}s; got {self.inbox}")

    def stop_reading(self) -> None:
        self.channel.stop_reader()
        self.loop.close()


@contextmanager
def running_worker(models: list[ModelConfig], role: str, tmp_path: Path) -> Iterator[WorkerUnderTest]:
    """A worker process on a fresh channel; killed, and its channel removed, however the test ends."""
    channel = Channel.create(1 << 20)
    process: subprocess.Popen[bytes] | None = None
    try:
        spec = WorkerSpec(worker=0 if role == "primary" else 1, role=role, cores=sorted(os.sched_getaffinity(0)),
                          gpu=None, channel=channel.spec, models=models, state_dir=str(tmp_path),
                          max_batch_tokens=4096, max_batch_size=32, parent_pid=os.getpid(),
                          stats_interval_s=0.2)  # fmt: skip
        with open(tmp_path / f"worker-{role}.log", "wb") as log:
            process = subprocess.Popen([sys.executable, "-m", "workers.main", msgspec.json.encode(spec).decode()],
                                       pass_fds=channel.pass_fds, stdin=subprocess.DEVNULL, stderr=log)  # fmt: skip
        worker = WorkerUnderTest(spec, channel, process)
        try:
            yield worker
        finally:
            worker.stop_reading()
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)
        channel.close()
        channel.unlink()


@pytest.fixture
def models(tiny_transformer: Path, tiny_static: Path, tiny_cross_encoder: Path) -> list[ModelConfig]:
    return [
        ModelConfig(name="tiny", path=str(tiny_transformer), main=True),
        ModelConfig(name="tiny-static", path=str(tiny_static), kind="static"),
        ModelConfig(name="tiny-ce", path=str(tiny_cross_encoder), kind="cross_encoder"),
    ]


@pytest.fixture
def primary(models: list[ModelConfig], tmp_path: Path) -> Iterator[WorkerUnderTest]:
    with running_worker(models, "primary", tmp_path) as worker:
        yield worker


def reference_vectors(model: ModelConfig, texts: list[str]) -> np.ndarray:
    from workers.runtimes import load_runtime

    runtime = load_runtime(model, Path(model.path), "cpu")
    return runtime.forward(runtime.tokenize(texts, truncate=True))


def test_results_heartbeat_and_drain(primary: WorkerUnderTest, models: list[ModelConfig]) -> None:
    ready = primary.wait_for(Ready)
    assert {m.name for m in ready.models} == {"tiny", "tiny-static", "tiny-ce"} and ready.role == "primary"
    texts = [f"sentence {i} " * (i % 7 + 1) for i in range(50)]
    primary.send(Embed(1, "tiny", texts))
    primary.send(Embed(2, "tiny-static", texts[:3]))
    primary.send(Rerank(3, "tiny-ce", "a query", ["doc one", "doc two", "doc three"]))
    primary.send(Rerank(4, "tiny", "sentence 1", ["sentence 1", "other words"]))
    vectors = primary.wait_for(Vectors, id=1)
    np.testing.assert_allclose(vectors.array(), reference_vectors(models[0], texts), atol=1e-5)
    assert len(vectors.tokens) == 50 and min(vectors.tokens) >= 3
    static = primary.wait_for(Vectors, id=2)
    np.testing.assert_allclose(static.array(), reference_vectors(models[1], texts[:3]), atol=1e-5)
    assert len(primary.wait_for(Scores, id=3).array()) == 3
    bi = primary.wait_for(Scores, id=4).array()
    assert bi[0] > bi[1] and abs(bi[0] - 1.0) < 1e-4  # identical text: cosine 1
    beat = primary.channel.heartbeat()
    time.sleep(0.5)
    assert primary.channel.heartbeat() > beat, "heartbeat must advance while idle"
    primary.inbox = [m for m in primary.inbox if not isinstance(m, Stats)]  # only a fresh one counts
    stats = primary.wait_for(Stats, timeout=5)
    assert stats.counters.items >= 50 + 3 + 3 + 3 and stats.counters.rss_bytes > 0
    primary.send(Drain("test"))
    primary.wait_for(Bye)
    assert primary.process.wait(30) == 0


def test_drain_finishes_what_it_holds(primary: WorkerUnderTest) -> None:
    primary.wait_for(Ready)
    for i in range(10):
        primary.send(Embed(100 + i, "tiny", [f"text {i} " * 30] * 20))
    primary.send(Drain("test"))
    for i in range(10):
        assert len(primary.wait_for(Vectors, id=100 + i).tokens) == 20
    primary.wait_for(Bye)
    assert primary.process.wait(30) == 0


def test_request_errors_fail_the_request_not_the_worker(primary: WorkerUnderTest) -> None:
    primary.wait_for(Ready)
    primary.send(Embed(5, "tiny", ["fine", "word " * 500], truncate=False))
    failed = primary.wait_for(Failed, id=5)
    assert failed.kind == FailureKind.INPUT_TOO_LONG and failed.index == 1
    primary.send(Embed(6, "tiny", [[1, 2, 10**9]]))
    assert primary.wait_for(Failed, id=6).kind == FailureKind.INVALID_INPUT
    primary.send(Embed(7, "tiny-ce", ["cross-encoders do not embed"]))
    assert primary.wait_for(Failed, id=7).kind == FailureKind.UNSUPPORTED
    primary.send(Embed(8, "tiny", ["still serving"]))
    assert len(primary.wait_for(Vectors, id=8).tokens) == 1


def test_light_worker_refuses_a_model_it_does_not_hold(models: list[ModelConfig], tmp_path: Path) -> None:
    with running_worker(models, "light", tmp_path) as worker:
        ready = worker.wait_for(Ready)
        assert [m.name for m in ready.models] == ["tiny"] and ready.role == "light"
        worker.send(Embed(1, "tiny-static", ["not here"]))
        failed = worker.wait_for(Failed, id=1)
        assert failed.kind == FailureKind.UNKNOWN_MODEL and "tiny-static" in failed.message
        worker.send(Embed(2, "tiny", ["here"]))
        worker.wait_for(Vectors, id=2)


def test_bad_model_path_exits_with_the_load_failure_code(tmp_path: Path, tiny_transformer: Path) -> None:
    models = [ModelConfig(name="tiny", path=str(tiny_transformer), main=True),
              ModelConfig(name="ghost", path=str(tmp_path / "missing-model"))]  # fmt: skip
    with running_worker(models, "primary", tmp_path) as worker:
        assert worker.process.wait(60) == EXIT_LOAD_ERROR
        log = (tmp_path / "worker-primary.log").read_text()
        assert "ghost" in log and "missing-model" in log


def test_expired_and_cancelled_requests_never_reach_the_model(primary: WorkerUnderTest) -> None:
    primary.wait_for(Ready)
    primary.send(Embed(300, "tiny", ["too late"], deadline=time.monotonic() - 1))
    assert primary.wait_for(Failed, id=300).kind == FailureKind.DEADLINE
    # a big request keeps the worker in forward passes while a queued one is withdrawn
    primary.send(Embed(301, "tiny", [f"busy {i} " * 20 for i in range(2000)]))  # ~0.3 MiB: fits the ring
    primary.send(Embed(302, "tiny", ["withdrawn " * 12] * 500))  # ~7,000 tokens: more than one batch
    primary.send(Cancel(302))
    primary.send(Embed(304, "tiny", ["still wanted"]))
    assert len(primary.wait_for(Vectors, id=304).tokens) == 1
    assert len(primary.wait_for(Vectors, id=301, timeout=120).tokens) == 2000
    primary.inbox = [m for m in primary.inbox if not isinstance(m, Stats)]
    stats = primary.wait_for(Stats, timeout=5)
    assert (stats.counters.cancelled, stats.counters.expired) == (1, 1)
    # the worker may have read 302 (and batched a slice of it) before the Cancel landed; the rest is dropped
    assert 2000 + 1 <= stats.counters.items < 2000 + 1 + 500, "the withdrawn request was not cut short"
    assert not any(getattr(m, "id", None) == 302 for m in primary.inbox), "a withdrawn request gets no answer"


def test_interactive_requests_overtake_a_background_request_queued_before_them(primary: WorkerUnderTest) -> None:
    """A job's chunk is queued first; a one-sentence request and a request with MORE items than
    the chunk (which fewest-queued-first alone would serve after it) are both answered first."""
    primary.wait_for(Ready)
    primary.send(Embed(400, "tiny", [f"job text {i} " * 4 for i in range(1000)], priority=BACKGROUND))
    primary.send(Embed(401, "tiny", ["a single interactive sentence"]))
    primary.send(Embed(402, "tiny", [f"interactive text {i} " * 4 for i in range(1500)]))
    assert primary.answer_order({400, 401, 402}) == [401, 402, 400]
    assert [len(primary.wait_for(Vectors, id=i).tokens) for i in (400, 401, 402)] == [1000, 1, 1500]
