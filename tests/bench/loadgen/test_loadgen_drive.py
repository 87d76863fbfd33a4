"""bench/loadgen/drive.py and process.py against a real HTTP server: both loops, every check,
latency from the scheduled time, and a load run in its own (pinned) process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Callable

import pytest

from bench.loadgen import LoadSpec, Mix, Request, Target, closed_loop, open_loop, pinned, run, split_cores
from bench.loadgen.schedule import poisson_schedule
from bench.loadgen.stats import percentile

CORPUS = tuple(f"Sentence {i}." for i in range(100))


@pytest.mark.parametrize("api", ["ollama", "openai", "tei"])
def test_a_closed_loop_checks_every_answer(fake_server: Callable[..., str], api: str) -> None:
    mix = Mix(("m",), batch=3)
    good = asyncio.run(closed_loop(Target(fake_server(8), api), lambda i: mix.request(CORPUS, i), concurrency=4,
                                   seconds=0.5, warmup=0.1))  # fmt: skip
    assert good.point.requests > 0 and good.failures == {} and good.point.batch == 3
    bad = asyncio.run(closed_loop(Target(fake_server(8, bad_dim_every=2), api), lambda i: mix.request(CORPUS, i),
                                  concurrency=2, seconds=0.5, warmup=0.1))  # fmt: skip
    assert bad.failures.get("dim", 0) > 0 and bad.point.errors == sum(bad.failures.values())
    short = asyncio.run(closed_loop(Target(fake_server(8, short_by=1), api, dims={"m": 8}),
                                    lambda i: mix.request(CORPUS, i), concurrency=2, seconds=0.3, warmup=0.0))  # fmt: skip
    assert short.point.requests == 0 and set(short.failures) == {"count"}


def test_a_refused_connection_is_a_transport_failure() -> None:
    result = asyncio.run(closed_loop(Target("http://127.0.0.1:9"), lambda i: Request("m", ["x"]), concurrency=1,
                                     seconds=0.3, warmup=0.0))  # fmt: skip
    assert result.point.requests == 0 and result.failures.get("transport", 0) > 0


def test_open_loop_latency_counts_from_the_scheduled_time(fake_server: Callable[..., str]) -> None:
    """The client stalls for 0.3 s on its first request, as a busy client would: every request
    scheduled during the stall is sent late, and that lateness is in its latency."""
    stall, rate, seed = 0.3, 100.0, 5
    mix = Mix(("m",), seed=seed)

    def requests(i: int) -> Request:
        if i == 0:
            time.sleep(stall)  # blocks the loop: the requests due meanwhile are sent late
        return mix.request(CORPUS, i)

    result = asyncio.run(open_loop(Target(fake_server(4)), requests, rate=rate, seconds=1.0, warmup=0.0, seed=seed))
    offsets = poisson_schedule(rate, 1.0, seed)
    # latency >= time from the scheduled send to the stall's end, request by request, so the
    # percentiles of those bounds are lower bounds of the measured ones whatever the box's load
    floor_ms = [max(0.0, stall - offset) * 1000 for offset in offsets]
    assert result.failures == {} and result.point.requests == len(offsets)
    assert result.point.p99_ms >= percentile(floor_ms, 99) * 0.95 > 100
    assert result.send_lag_p99_ms > 100 and result.offered_rps == pytest.approx(len(offsets), rel=1e-6)


def test_cores_are_split_only_on_machines_with_four_or_more() -> None:
    assert split_cores([0, 1]) == ((0, 1), None)
    assert split_cores([0, 1, 2, 3]) == ((0, 1, 2), (3,))
    assert split_cores(range(16)) == (tuple(range(12)), (12, 13, 14, 15))


def test_a_load_runs_in_its_own_pinned_process(fake_server: Callable[..., str]) -> None:
    core = max(os.sched_getaffinity(0))
    spec = LoadSpec(Target(fake_server(8), "openai"), Mix(("m",), batch=2), CORPUS, concurrency=2, seconds=0.5,
                    warmup=0.1, cores=(core,))  # fmt: skip
    result = run(spec)
    assert result.point.requests > 0 and result.failures == {}
    opened = run(LoadSpec(spec.target, spec.mix, CORPUS, mode="open", rate=50, seconds=0.5, warmup=0.1))
    assert opened.point.requests > 0 and opened.offered_rps > 0


def test_pinned_moves_this_process_for_the_block_and_back() -> None:
    before = os.sched_getaffinity(0)
    one = {min(before)}
    with pinned(tuple(one)):
        assert os.sched_getaffinity(0) == one
        child = subprocess.run([sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
                               capture_output=True, text=True, timeout=60)  # fmt: skip
        assert child.stdout.strip() == str(sorted(one))  # what it starts meanwhile inherits the mask
    assert os.sched_getaffinity(0) == before
    with pinned(None):  # a machine too small to split: left alone
        assert os.sched_getaffinity(0) == before
