"""A real worker process on tiny random models, fed through a real shared-memory channel."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import msgspec
import numpy as np
import pytest

from appliance.config import ModelConfig
from appliance.ipc.channel import Channel
from appliance.protocol import (
    BACKGROUND,
    BATCH_SIZE_BOUNDS,
    BATCH_TOKEN_BOUNDS,
    EXIT_LOAD_ERROR,
    EXIT_PARENT_GONE,
    Bye,
    Cancel,
    Drain,
    Embed,
    Failed,
    FailureKind,
    Ready,
    Rerank,
    Scores,
    Stats,
    Vectors,
)
from workers.compile_cache import CACHE_DIR
from worker_under_test import WorkerUnderTest, running_worker, worker_spec

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent


def slow_worker(seconds: float) -> list[str]:
    """A worker command whose model load takes ``seconds`` longer (``_slow_boot.py``)."""
    return [sys.executable, str(HERE / "_slow_boot.py"), str(seconds)]


@pytest.fixture
def models(tiny_transformer: Path, tiny_static: Path, tiny_cross_encoder: Path) -> list[ModelConfig]:
    # float32: the worker's answers are held to an in-process runtime's to float32 rounding, though
    # they batch the texts differently; bf16 (what auto may pick here) rounds differently per batch
    return [
        ModelConfig(name="tiny", path=str(tiny_transformer), main=True, dtype="float32"),
        ModelConfig(name="tiny-static", path=str(tiny_static), kind="static"),
        ModelConfig(name="tiny-ce", path=str(tiny_cross_encoder), kind="cross_encoder", dtype="float32"),
    ]


@pytest.fixture
def primary(models: list[ModelConfig], tmp_path: Path) -> Iterator[WorkerUnderTest]:
    with running_worker(models, "primary", tmp_path) as worker:
        yield worker


def reference_vectors(model: ModelConfig, texts: list[str], *, normalize: bool | None = None,
                      direction: str = "right") -> np.ndarray:  # fmt: skip
    """In-process vectors, normalised as the request says (None: as the model does by default)."""
    from workers.runtimes import l2_normalize, load_runtime

    runtime = load_runtime(model, Path(model.path), "cpu")
    vectors = runtime.forward(runtime.tokenize(texts, truncate=True, direction=direction))
    return l2_normalize(vectors) if (runtime.normalize if normalize is None else normalize) else vectors


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


def test_each_request_gets_its_own_normalisation_direction_and_score_form(primary: WorkerUnderTest,
                                                                          models: list[ModelConfig]) -> None:  # fmt: skip
    """Requests that want different things share batches; each answer is still its own."""
    from workers.runtimes import sigmoid

    primary.wait_for(Ready)
    texts = ["the quick brown fox " * 40, "short text"]  # the first is cut at 128 tokens
    primary.send(Embed(1, "tiny", texts))
    primary.send(Embed(2, "tiny", texts, normalize=False))
    primary.send(Embed(3, "tiny", texts, truncation_direction="left"))
    primary.send(Embed(4, "tiny-static", texts, normalize=False, truncation_direction="left"))
    pairs = ("a query", ["doc one", "doc two", "doc three"])
    primary.send(Rerank(5, "tiny-ce", *pairs))
    primary.send(Rerank(6, "tiny-ce", *pairs, raw_scores=True))
    tiny, static = models[0], models[1]
    np.testing.assert_allclose(primary.wait_for(Vectors, id=1).array(), reference_vectors(tiny, texts), atol=1e-5)
    raw = primary.wait_for(Vectors, id=2).array()
    np.testing.assert_allclose(raw, reference_vectors(tiny, texts, normalize=False), atol=1e-5)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)
    left = primary.wait_for(Vectors, id=3).array()
    np.testing.assert_allclose(left, reference_vectors(tiny, texts, direction="left"), atol=1e-5)
    assert not np.allclose(left[0], reference_vectors(tiny, texts)[0], atol=1e-3)  # another end was kept
    np.testing.assert_allclose(left[1], reference_vectors(tiny, texts)[1], atol=1e-5)  # nothing to cut
    np.testing.assert_allclose(primary.wait_for(Vectors, id=4).array(),
                               reference_vectors(static, texts, normalize=False, direction="left"), atol=1e-5)
    probabilities = primary.wait_for(Scores, id=5).array()
    logits = primary.wait_for(Scores, id=6).array()
    np.testing.assert_allclose(probabilities, sigmoid(logits), atol=1e-6)


def test_stats_carry_batch_histograms_that_count_every_batch(models: list[ModelConfig], tmp_path: Path) -> None:
    with running_worker(models, "light", tmp_path) as worker:  # max_batch_size 32, max_batch_tokens 4096
        worker.wait_for(Ready)
        worker.send(Embed(1, "tiny", [f"histogram sentence {i}" for i in range(50)]))  # two batches at least
        worker.wait_for(Vectors, id=1)
        worker.send(Embed(2, "tiny", ["alone"]))  # a batch of one
        worker.wait_for(Vectors, id=2)
        worker.inbox = [m for m in worker.inbox if not isinstance(m, Stats)]  # only a fresh one counts
        counters = worker.wait_for(Stats, timeout=5).counters
    assert counters.items == 51 and counters.batches >= 3
    sizes, tokens = counters.batch_size_counts, counters.batch_token_counts
    assert len(sizes) == len(BATCH_SIZE_BOUNDS) + 1 and len(tokens) == len(BATCH_TOKEN_BOUNDS) + 1
    assert sizes[-1] == tokens[-1] == counters.batches  # +Inf counts every batch
    assert sizes == sorted(sizes) and tokens == sorted(tokens)  # cumulative
    assert sizes[0] >= 1  # the batch of one
    assert sizes[BATCH_SIZE_BOUNDS.index(32)] == counters.batches  # none over max_batch_size
    assert sizes[BATCH_SIZE_BOUNDS.index(16)] < counters.batches  # the 50 came in batches over 16
    assert tokens[BATCH_TOKEN_BOUNDS.index(4096)] == counters.batches  # none over max_batch_tokens
    assert counters.gpu_memory_bytes == 0  # a CPU worker


def test_the_queue_stage_counts_the_wait_in_the_ring(primary: WorkerUnderTest) -> None:
    """A request the gateway stamped 0.4 s before the worker read it (what a running batch costs
    a request sent meanwhile) answers with at least that much queueing; an unstamped one, less."""
    primary.wait_for(Ready)
    primary.send(Embed(500, "tiny", ["stamped early"], sent=time.monotonic() - 0.4))
    primary.send(Rerank(501, "tiny-ce", "a query", ["a document"], sent=time.monotonic() - 0.4))
    primary.send(Embed(502, "tiny", ["not stamped"]))
    assert primary.wait_for(Vectors, id=500).queue_us >= 400_000
    assert primary.wait_for(Scores, id=501).queue_us >= 400_000
    assert primary.wait_for(Vectors, id=502).queue_us < 400_000


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


# ---- boot liveness: the heartbeat runs while a worker loads; a worker dies with its gateway ----
SLOW_LOAD_S = 4.0
MAX_SILENCE_S = 3.0  # the boot heartbeat beats every second; the rest is slack for a busy machine


def test_heartbeat_advances_while_a_slow_model_loads(tmp_path: Path, tiny_transformer: Path) -> None:
    """Without the boot heartbeat the word stays still for the whole load (over SLOW_LOAD_S), and a
    supervisor switching to worker_timeout at Ready would kill a worker that just finished loading."""
    models = [ModelConfig(name="tiny", path=str(tiny_transformer), main=True)]
    with running_worker(models, "primary", tmp_path, command=slow_worker(SLOW_LOAD_S)) as worker:
        samples = heartbeat_until_ready(worker, timeout=120)
        started, ready_at = samples[0][0], samples[-1][0]
        assert ready_at - started >= SLOW_LOAD_S, "the load was not slow: the test proves nothing"
        assert longest_silence(samples) < MAX_SILENCE_S, f"heartbeat stalled while loading: {samples}"
        assert samples[-1][1] >= SLOW_LOAD_S - 1, "fewer beats than seconds spent loading"
        beat = worker.channel.heartbeat()
        time.sleep(0.5)
        assert worker.channel.heartbeat() > beat, "the serving loop beats after Ready"
        worker.send(Drain("test"))
        worker.wait_for(Bye)
        assert worker.process.wait(30) == 0


def heartbeat_until_ready(worker: WorkerUnderTest, timeout: float) -> list[tuple[float, int]]:
    """(time, heartbeat) from the worker's start, sampled every 50 ms, the last one taken at Ready.
    The supervisor, too, counts silence from the spawn."""
    samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + timeout
    while not any(isinstance(m, Ready) for m in worker.inbox):
        assert time.monotonic() < deadline, f"no Ready within {timeout}s"
        assert worker.process.poll() is None, f"worker exited with {worker.process.returncode}"
        samples.append((time.monotonic(), worker.channel.heartbeat()))
        worker.loop.run_until_complete(asyncio.sleep(0.05))
    samples.append((time.monotonic(), worker.channel.heartbeat()))
    return samples


def longest_silence(samples: list[tuple[float, int]]) -> float:
    """The longest time the heartbeat word stayed the same."""
    longest, since, last = 0.0, samples[0][0], samples[0][1]
    for at, beat in samples:
        if beat != last:
            since, last = at, beat
        longest = max(longest, at - since)
    return longest


def test_a_worker_whose_gateway_is_already_gone_exits_at_once(tmp_path: Path, tiny_transformer: Path) -> None:
    """The parent-death signal covers only a parent alive when it is set: one that died before is
    caught by comparing the parent pid with the spec's."""
    models = [ModelConfig(name="tiny", path=str(tiny_transformer), main=True)]
    not_our_parent = os.getpid() + 1_000_000  # above any pid_max: never a live process
    with running_worker(models, "primary", tmp_path, parent_pid=not_our_parent) as worker:
        assert worker.process.wait(10) == EXIT_PARENT_GONE
        assert "exited before we started" in (tmp_path / "worker-primary.log").read_text()


def test_a_loading_worker_dies_with_its_gateway(tmp_path: Path, tiny_transformer: Path) -> None:
    """A stand-in gateway spawns a worker whose load takes a minute, and is SIGKILLed while the
    worker loads: the worker is gone within seconds, long before its load would have ended."""
    channel = Channel.create(1 << 20)
    models = [ModelConfig(name="tiny", path=str(tiny_transformer), main=True)]
    spec = worker_spec(channel, models, "primary", tmp_path, parent_pid=0)  # the stand-in puts its own pid in
    fds = [str(fd) for fd in channel.pass_fds]
    command = [sys.executable, str(HERE / "_gateway_stand_in.py"), msgspec.json.encode(spec).decode(), *fds, "--",
               *slow_worker(60)]  # fmt: skip
    gateway = subprocess.Popen(command, pass_fds=channel.pass_fds, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    worker_pid = 0
    try:
        assert gateway.stdout is not None
        worker_pid = int(gateway.stdout.readline())
        wait_until(lambda: channel.heartbeat() > 0, 60, "the worker never attached its channel")
        assert alive(worker_pid), "the worker must still be loading when its gateway dies"
        gateway.kill()
        gateway.wait(10)
        wait_until(lambda: not alive(worker_pid), 3, f"worker {worker_pid} outlived its gateway")
    finally:
        if gateway.poll() is None:
            gateway.kill()
            gateway.wait(10)
        if worker_pid and alive(worker_pid):
            os.kill(worker_pid, 9)
        channel.close()
        channel.unlink()


def alive(pid: int) -> bool:
    """Running, not exited: a zombie waiting for its (new) parent to reap it counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def wait_until(condition: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{message} (waited {timeout:g}s)"
        time.sleep(0.05)


COMPILED_READY_S = 600  # a compile of even the tiny model takes minutes on a loaded 2-core box
CACHE_LINE = re.compile(r"model 'tiny' compiled: fx graph cache (\d+) hit, (\d+) miss, (\d+) bypass; "
                        r"autograd cache (\d+) hit, (\d+) miss, (\d+) bypass")  # fmt: skip


def compiled_start(model: ModelConfig, tmp_path: Path) -> tuple[list[int], np.ndarray]:
    """One compile = true worker on ``tmp_path`` as state_dir, up to Ready and one answer, then
    killed as a crash would: (torch's cache counters from its log line, the vectors it gave)."""
    texts = [f"compiled sentence {i} " * (i % 5 + 1) for i in range(9)]
    with running_worker([model], "primary", tmp_path) as worker:
        worker.wait_for(Ready, timeout=COMPILED_READY_S)
        worker.send(Embed(1, "tiny", texts))
        vectors = worker.wait_for(Vectors, id=1).array()
    log = (tmp_path / "worker-primary.log").read_text()
    found = CACHE_LINE.search(log)
    assert found, f"no cache counters in the worker's log:\n{log[-3000:]}"
    # float32 (the callers say so): compiled and eager agree to float32 rounding, which bf16 would blur
    np.testing.assert_allclose(vectors, reference_vectors(model, texts), atol=1e-4)
    return [int(n) for n in found.groups()], vectors


def test_a_compiled_workers_second_start_reuses_its_artefacts(tmp_path: Path, tiny_transformer: Path) -> None:
    """The first start compiles and stores; the second (a respawn or a restart on the same
    state_dir) hits torch's FX graph and AOTAutograd caches, and misses nothing."""
    model = ModelConfig(name="tiny", path=str(tiny_transformer), main=True, compile=True, dtype="float32")
    first, _ = compiled_start(model, tmp_path)
    assert list((tmp_path / CACHE_DIR).rglob("*.so")), f"no compiled kernel under {tmp_path / CACHE_DIR}"
    assert first[0] == 0 and first[2] == 0 and first[1] >= 1, f"first start: {first}"
    second, _ = compiled_start(model, tmp_path)
    graph_hits, graph_misses, graph_bypasses, aot_hits, _, aot_bypasses = second
    assert graph_hits >= 1 and aot_hits >= 1, f"second start reused nothing: {second}"
    assert graph_misses == graph_bypasses == aot_bypasses == 0, f"second start: {second}"


def test_a_compiled_worker_with_corrupt_artefacts_compiles_afresh(tmp_path: Path, tiny_transformer: Path) -> None:
    """Every cached file overwritten (graphs, traced forwards, kernel libraries cut short): the
    next start compiles again, reuses none of it, and answers as the eager model does."""
    model = ModelConfig(name="tiny", path=str(tiny_transformer), main=True, compile=True, dtype="float32")
    compiled_start(model, tmp_path)
    spoiled = [path for path in (tmp_path / CACHE_DIR).rglob("*") if path.is_file() and path.parent.name != "locks"]
    assert spoiled
    for path in spoiled:
        path.write_bytes(path.read_bytes()[:64] + b"\x00corrupt")
    again, _ = compiled_start(model, tmp_path)
    assert again[0] == again[3] == 0, f"corrupt artefacts were reused: {again}"
