"""`python -m bench jobs`: bulk work against the model's raw limit and against interactive traffic.

Three figures, each a ratio of a baseline measured in the same run (cache off throughout):

- **Job throughput**: a ``--job-size``-sentence embed job from submit to SUCCESS, in sentences/s,
  over the raw limit (the in-process model on every core, sorted batches of 32; measured before
  and after). Target: at least 0.8x.
- **Time to first streamed result**: ``--stream-size`` texts through ``POST /api/embed/stream``,
  time until its first ``result`` event, over the time the same texts take as one
  ``POST /api/embed/batch`` answer. Lower is better: it says how much sooner a client can start.
- **Interactive p99 under a job**: single sentences from ``--concurrency`` closed-loop clients,
  p99 while a big job runs over p99 of the same load without it. Target: at most 2x.

Last line: one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any, Sequence

import aiohttp

from bench.corpus import sentences
from bench.loadgen import closed_loop_point as closed_loop
from bench.points import Point, show
from bench.raw import measure_raw
from bench.target import add_options, appliance, auth_headers

POLL_S = 0.2
JOB_SETTINGS = {"APPLIANCE_CACHE_BYTES": "0", "APPLIANCE_MAX_JOB_INPUTS": "1000000"}


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench jobs", description=__doc__.splitlines()[0])
    add_options(p, workers="auto")
    p.add_argument("--device", default="cpu", help="device of the raw-limit measurement")
    p.add_argument("--job-size", type=int, default=20_000, help="sentences in the throughput job")
    p.add_argument("--stream-size", type=int, default=2000, help="texts in the stream vs batch comparison")
    p.add_argument("--concurrency", type=int, default=8, help="interactive clients for the p99 comparison")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds of each interactive window")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--raw-seconds", type=float, default=8.0)
    p.add_argument("--no-raw", action="store_true", help="skip the raw limit (the throughput ratio will be 0)")
    return p.parse_args(argv)


async def submit(session: aiohttp.ClientSession, url: str, model: str, texts: list[str]) -> str:
    """The new job's status URL."""
    async with session.post(f"{url}/v1/jobs", json={"model": model, "inputs": texts, "use_cache": False}) as answer:
        accepted = await answer.json()
        assert answer.status == 202, accepted
    return str(accepted["status_url"])


async def run_job(session: aiohttp.ClientSession, url: str, model: str, texts: list[str]) -> dict[str, Any]:
    """Submit, poll to the end; the job's final view and its wall time from submit."""
    started = time.perf_counter()
    status_url = await submit(session, url, model, texts)
    while True:
        async with session.get(f"{url}{status_url}") as answer:
            job = await answer.json()
        if job["status"] in ("SUCCESS", "FAILURE", "CANCELLED"):
            return {**job, "wall_s": time.perf_counter() - started}
        await asyncio.sleep(POLL_S)


async def first_streamed(session: aiohttp.ClientSession, url: str, model: str, texts: list[str]) -> tuple[float, float]:
    """(seconds to the first ``result`` event, seconds to ``complete``) of one stream."""
    started = time.perf_counter()
    first = 0.0
    async with session.post(f"{url}/api/embed/stream", json={"model": model, "inputs": [texts],
                                                             "use_cache": False}) as answer:  # fmt: skip
        assert answer.status == 200, await answer.text()
        async for line in answer.content:
            if line.startswith(b"event: result") and not first:
                first = time.perf_counter() - started
            if line.startswith(b"event: complete"):
                break
    return first, time.perf_counter() - started


async def whole_batch(session: aiohttp.ClientSession, url: str, model: str, texts: list[str]) -> float:
    started = time.perf_counter()
    body = {"model": model, "inputs": [texts[i:i + 1000] for i in range(0, len(texts), 1000)], "use_cache": False}
    async with session.post(f"{url}/api/embed/batch", json=body) as answer:
        await answer.read()
        assert answer.status == 200
    return time.perf_counter() - started


async def interactive_under_job(args: argparse.Namespace, url: str, corpus: list[str]) -> tuple[Point, Point]:
    """The same single-sentence load without, then with, a big job running."""
    headers = auth_headers(args.api_key)

    def texts(offset: int) -> Any:
        return lambda i: [f"{corpus[i % len(corpus)]} ({offset}-{i})"]  # never a repeat, even with a cache

    alone = await closed_loop(url, args.model, texts(0), args.concurrency, args.seconds, args.warmup,
                              scenario="alone", headers=headers)  # fmt: skip
    async with aiohttp.ClientSession(headers=headers) as session:
        # far more than the window can finish: the job runs through the whole measurement
        status_url = await submit(session, url, args.model, [f"{t} (job)" for t in corpus] * 50)
        await asyncio.sleep(args.warmup)
        loaded = await closed_loop(url, args.model, texts(1), args.concurrency, args.seconds, args.warmup,
                                   scenario="with-job", headers=headers)  # fmt: skip
        async with session.delete(f"{url}{status_url}") as answer:
            cancelled = await answer.json()
    assert cancelled["status"] == "CANCELLED", f"the job ended before the window did: {cancelled}"
    return show(alone), show(loaded)


async def measure(args: argparse.Namespace, url: str, corpus: list[str]) -> dict[str, Any]:
    async with aiohttp.ClientSession(headers=auth_headers(args.api_key),
                                     timeout=aiohttp.ClientTimeout(total=3600)) as session:  # fmt: skip
        job = await run_job(session, url, args.model, [corpus[i % len(corpus)] for i in range(args.job_size)])
        stream_texts = [f"{t} (stream)" for t in corpus[: args.stream_size]]
        first, streamed = await first_streamed(session, url, args.model, stream_texts)
        batch = await whole_batch(session, url, args.model, [f"{t} (batch)" for t in corpus[: args.stream_size]])
    alone, loaded = await interactive_under_job(args, url, corpus)
    return {"job": job, "first_result_s": first, "stream_s": streamed, "batch_s": batch, "alone": alone,
            "with_job": loaded}  # fmt: skip


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    corpus = sentences(4000)
    raws = [] if args.no_raw else [measure_raw(args, corpus, args.raw_seconds)]
    with appliance(args, JOB_SETTINGS) as (url, _):
        figures = asyncio.run(measure(args, url, corpus))
    if raws:
        raws.append(measure_raw(args, corpus, args.raw_seconds))
    raw = statistics.mean(raws) if raws else 0.0
    summary = report(args, raw, raws, figures)
    for key, value in summary.items():
        if key != "points":
            print(f"{key}: {value}")
    print(json.dumps(summary))
    return 0


def report(args: argparse.Namespace, raw: float, raws: list[float], figures: dict[str, Any]) -> dict[str, Any]:
    job, alone, loaded = figures["job"], figures["alone"], figures["with_job"]
    job_sps = job["progress"]["done"] / job["wall_s"]
    return {"model": args.model, "raw_limit_sps": round(raw, 1), "raw_runs": [round(r, 1) for r in raws],
            "job_status": job["status"], "job_size": args.job_size, "job_sps": round(job_sps, 1),
            "job_over_raw": round(job_sps / raw, 3) if raw else 0.0,
            "first_result_s": round(figures["first_result_s"], 3), "stream_s": round(figures["stream_s"], 3),
            "batch_s": round(figures["batch_s"], 3),
            "first_result_over_batch": round(figures["first_result_s"] / figures["batch_s"], 3),
            "p99_alone_ms": alone.p99_ms, "p99_with_job_ms": loaded.p99_ms,
            "p99_with_job_over_alone": round(loaded.p99_ms / alone.p99_ms, 2) if alone.p99_ms else None,
            "points": [vars(alone), vars(loaded)]}  # fmt: skip
