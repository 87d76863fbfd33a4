"""`python -m bench serve`: served throughput and latency, as a ratio of the model's raw limit.

Scenarios (``--scenarios``, all by default):

- ``throughput``: the appliance with its cache off, driven by a closed-loop HTTP load generator
  (aiohttp client: each of C connections sends its next request as soon as the last one is
  answered) over a concurrency sweep, with single-sentence and 32-sentence requests drawn from
  the bench corpus. The raw limit (in-process model, as many threads as cores, length-sorted
  batches of 32, same corpus) is measured in the same run, before and after the load, while the
  appliance is idle, and the mean is the denominator: these machines are shared and noisy, so
  only same-run ratios mean anything.
- ``repeat``: the appliance with its cache on, single sentences at one concurrency, a fraction
  (0, 0.3, 0.6, 0.9) of them drawn from a small hot set and the rest never seen before; the
  figure that matters is each fraction's throughput over fraction 0's, from the same run.
- ``--scrape-metrics``: only the c=32 single-sentence point, without and with a client scraping
  ``/metrics`` once a second, interleaved, twice each (``bench/scrape.py``): the ratio and the
  run-to-run noise it must stay within.
- ``--batching``: after each throughput point, how the workers batched it (padding ratio,
  inputs per batch, ms per batch) and the mean ms per request in the client, the gateway's
  handler and the worker's queue, tokenizer and model, from ``/metrics`` (``bench/batching.py``).
- ``--cpu``: after each throughput and open-loop point, where the machine's CPU went during it:
  CPU us per request of the load generator (this process), the gateway and each worker, and
  their shares of the cores with the rest busy and idle (``bench/cpu_split.py``); with ``--url``
  only the client and the machine.
- ``hit``: every request a cached sentence, at concurrency 64, driven by Debian's ``wrk``
  (``apt-get install wrk``) because a Python client saturates before the gateway does on small
  machines (its script prints the 95th percentile, which ``--latency`` leaves out). Then the
  same load against ``bench/floor.py``, a bare aiohttp app answering the same bytes: the
  ``http-floor`` row, and the hit rate's ratio to it, say how much of the hit path is HTTP itself.

With ``--url URL --api openai|tei`` (any running server, a peer) only ``throughput`` runs.
Each point prints p50/p95/p99. Last line: one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import urllib.request
from dataclasses import asdict
from typing import ContextManager, Sequence

import msgspec
import numpy as np

from bench import batching, cpu_split, wrk
from bench.corpus import sentences
from bench.floor import http_floor
from bench.launcher import Appliance
from bench.loadgen import Texts, corpus_texts, pinned, split_cores
from bench.loadgen.apis import APIS
from bench.loadgen.drive import Target, open_loop
from bench.loadgen.mix import Request
from bench.loadgen import closed_loop_point as closed_loop
from bench.points import Point, show, table
from bench.raw import measure_raw
from bench.scrape import run_scrape_points
from bench.target import add_options, appliance, auth_headers


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench serve", description=__doc__.splitlines()[0])
    add_options(p, workers="auto")
    p.add_argument("--device", default="cpu", help="device of the raw-limit measurement (cpu, cuda:0)")
    p.add_argument("--concurrency", default="1,8,32,64")
    p.add_argument("--batches", default="1,32", help="sentences per request")
    p.add_argument("--rates", default="",
                   help="open-loop points after the closed ones: Poisson arrivals at these requests/s "
                        "(comma-separated; latency from each scheduled send)")  # fmt: skip
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per point")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--raw-seconds", type=float, default=8.0, help="seconds of each raw-limit measurement")
    p.add_argument("--no-raw", action="store_true", help="skip the raw limit (ratios will be 0)")
    p.add_argument("--scenarios", default="throughput,repeat,hit",
                   help="throughput (cache off, concurrency x batch sweep), repeat (repeat-fraction sweep), "
                        "hit (pure cache hits, through wrk when installed)")  # fmt: skip
    p.add_argument("--repeat-fractions", default="0,0.3,0.6,0.9")
    p.add_argument("--repeat-concurrency", type=int, default=32)
    p.add_argument("--hot-set", type=int, default=64, help="texts in the hot set of the repeat and hit scenarios")
    p.add_argument("--hit-concurrency", type=int, default=64)
    p.add_argument("--scrape-metrics", action="store_true",
                   help="only the c=32 point without and with a 1 s /metrics scraper, interleaved, twice each")  # fmt: skip
    p.add_argument("--batching", action="store_true",
                   help="after each throughput point, the workers' padding ratio and batch sizes during it")  # fmt: skip
    p.add_argument("--cpu", action="store_true",
                   help="after each throughput and open-loop point, the CPU per request and the cores' shares "
                        "of the client, the gateway and the workers")  # fmt: skip
    p.add_argument("--api", choices=APIS, default="ollama",
                   help="API of the server (with --url, any peer's): openai or tei run the throughput sweep only")  # fmt: skip
    return p.parse_args(argv)


def repeat_texts(corpus: list[str], hot: list[str], fraction: float, seed: int) -> Texts:
    """Single sentences: from the hot set with probability ``fraction``, else never seen before.

    A fresh sentence carries its request number, so no miss is ever a hit by accident across
    points or runs of one appliance."""
    rng = np.random.default_rng(seed)
    return lambda i: [hot[int(rng.integers(len(hot)))] if rng.random() < fraction
                      else f"{corpus[i % len(corpus)]} ({seed}-{i})"]  # fmt: skip


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    # On 4 cores or more the appliance (started from here: it inherits the mask) and the raw limit
    # get the server's cores, and each load runs on the others (``pinned(args.load_cores)``)
    cores = split_cores()
    args.load_cores = cores.load
    with pinned(cores.server if cores.load else None):
        return measure(args)


def measure(args: argparse.Namespace) -> int:
    if args.scrape_metrics:
        return scrape_metrics(args)
    scenarios = set(args.scenarios.split(","))
    if args.api != "ollama":
        scenarios &= {"throughput"}  # repeat and hit rely on the appliance's cache and its /api/embed
    corpus = sentences(4000)
    raws = [] if args.no_raw or "throughput" not in scenarios else [measure_raw(args, corpus, args.raw_seconds)]
    points: list[Point] = []
    meter = None
    if "throughput" in scenarios:
        # cache off: the sweep measures the model path, and a corpus sentence seen twice is no hit
        with appliance(args, {"APPLIANCE_CACHE_BYTES": "0"}) as (url, started):
            meter = cpu_meter(args, started)
            points += run_sweep(args, url, corpus, meter)
    if scenarios & {"repeat", "hit"}:
        with appliance(args, {}) as (url, _):
            if "repeat" in scenarios:
                points += run_repeat_sweep(args, url, corpus)
            if "hit" in scenarios:
                points += run_pure_hit(args, url, corpus)
    if raws:
        raws.append(measure_raw(args, corpus, args.raw_seconds))
    raw = statistics.mean(raws) if raws else 0.0
    for point in points:
        point.ratio_to_raw = round(point.sentences_per_s / raw, 3) if raw else 0.0
    if raws:
        print(f"raw limit ({args.model} on {args.device}, {os.cpu_count()} threads, sorted batches of 32): "
              f"{raw:.1f} sentences/s (runs: {', '.join(f'{r:.1f}' for r in raws)})")  # fmt: skip
    print(table(points))
    summary = report(args, raw, raws, points, meter)
    hit = summary["pure_hit"]
    if isinstance(hit, dict) and hit["over_floor"]:
        print(f"pure hits: {hit['rps']:.0f} req/s = {hit['over_floor']:.2f}x the bare-aiohttp floor "
              f"({hit['floor_rps']:.0f} req/s) in this run")  # fmt: skip
    print(json.dumps(summary))
    return 0


def scrape_metrics(args: argparse.Namespace) -> int:
    """``--scrape-metrics``: the scraper's cost, as a ratio within this run's noise."""
    with appliance(args, {"APPLIANCE_CACHE_BYTES": "0"}) as (url, _):
        points, summary = run_scrape_points(args, url, sentences(4000))
    print(table(points))
    print(f"with a 1 s /metrics scraper: {summary['ratio']:.3f}x the throughput without "
          f"(each round: {summary['paired_ratios']}; run-to-run noise {summary['noise']:.1%}; "
          f"{summary['scrapes']} scrapes, median {summary['scrape_p50_ms']} ms)")  # fmt: skip
    print(json.dumps({"model": args.model, "scrape_metrics": summary}))
    return 0


def report(args: argparse.Namespace, raw: float, raws: list[float], points: list[Point],
           meter: cpu_split.Meter | None = None) -> dict[str, object]:  # fmt: skip
    def find(scenario: str, batch: int = 1, concurrency: int = 32) -> Point | None:
        return next((p for p in points if (p.scenario, p.batch, p.concurrency) == (scenario, batch, concurrency)), None)

    target = find("embed")
    rf0, rf6 = (find(s, concurrency=args.repeat_concurrency) for s in ("repeat-0", "repeat-0.6"))
    hit = next((p for p in points if p.scenario.startswith("hit")), None)
    floor = next((p for p in points if p.scenario == "http-floor"), None)
    return {"model": args.model, "raw_limit_sps": round(raw, 1), "raw_runs": [round(r, 1) for r in raws],
            "target_ratio_c32_single": target.ratio_to_raw if target else None,
            "repeat_0.6_over_0": round(rf6.rps / rf0.rps, 2) if rf0 and rf6 and rf0.rps else None,
            "pure_hit": {"rps": hit.rps, "p99_ms": hit.p99_ms, "concurrency": hit.concurrency,
                         "client": hit.scenario, "floor_rps": floor.rps if floor else None,
                         "over_floor": round(hit.rps / floor.rps, 2) if floor and floor.rps else None}
                        if hit else None,
            "points": [asdict(p) for p in points],
            **({"cpu": meter.records} if meter else {})}  # fmt: skip


def cpu_meter(args: argparse.Namespace, started: Appliance | None) -> cpu_split.Meter | None:
    """``--cpu``'s meter over this process and the appliance this bench started, if it did."""
    if not args.cpu:
        return None
    if started is None:
        print("cpu: --url names a server this bench did not start: no gateway or worker pids, "
              "so only the client's CPU and the machine's shares", flush=True)  # fmt: skip
    return cpu_split.Meter(cpu_split.processes_of(started))


def cpu_window(meter: cpu_split.Meter | None, args: argparse.Namespace) -> ContextManager[cpu_split.Window | None]:
    return meter.window(args.warmup, args.seconds) if meter else contextlib.nullcontext()


def run_sweep(args: argparse.Namespace, url: str, corpus: list[str],
              meter: cpu_split.Meter | None = None) -> list[Point]:  # fmt: skip
    points = []
    headers = auth_headers(args.api_key)
    for batch in (int(b) for b in args.batches.split(",")):
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            texts = corpus_texts(corpus, batch)
            before = batching.settled_counters(url, headers) if args.batching else {}
            with pinned(args.load_cores), cpu_window(meter, args) as window:
                point = show(asyncio.run(closed_loop(url, args.model, texts, concurrency, args.seconds,
                                                     args.warmup, headers=headers, api=args.api)))  # fmt: skip
            points.append(point)
            if meter and window:
                print(meter.split(window, point).line(), flush=True)
            if args.batching:  # a closed loop's mean round trip: its concurrency over its request rate
                figures = batching.between(before, batching.settled_counters(url, headers))
                print(figures.line(1000 * concurrency / point.rps if point.rps else 0.0), flush=True)
        points += [open_point(args, url, corpus_texts(corpus, batch), float(rate), headers, meter)
                   for rate in args.rates.split(",") if rate]  # fmt: skip
    return points


def open_point(args: argparse.Namespace, url: str, texts: Texts, rate: float, headers: dict[str, str],
               meter: cpu_split.Meter | None = None) -> Point:  # fmt: skip
    """Poisson arrivals at ``rate`` requests/s: the latency a server shows to independent clients,
    where a closed loop's next request waits for the last answer (scenario ``open@<rate>``)."""
    target = Target(url, args.api, headers)
    before = batching.settled_counters(url, headers) if args.batching else {}
    with pinned(args.load_cores), cpu_window(meter, args) as window:
        result = asyncio.run(open_loop(target, lambda i: Request(args.model, texts(i)), rate=rate,
                                       seconds=args.seconds, warmup=args.warmup, scenario=f"open@{rate:g}"))  # fmt: skip
    point = show(result.point)
    if meter and window:
        print(meter.split(window, point).line(), flush=True)
    if args.batching:  # the client's mean: what the stages add up to, from the scheduled send
        figures = batching.between(before, batching.settled_counters(url, headers))
        print(figures.line(result.mean_ms), flush=True)
    return point


def hot_set(corpus: list[str], size: int) -> list[str]:
    return [f"{sentence} (hot)" for sentence in corpus[-size:]]


def run_repeat_sweep(args: argparse.Namespace, url: str, corpus: list[str]) -> list[Point]:
    """Single sentences at one concurrency; a fraction of them from a small hot set."""
    hot = hot_set(corpus, args.hot_set)
    points = []
    for n, fraction in enumerate(float(f) for f in args.repeat_fractions.split(",")):
        texts = repeat_texts(corpus[: -args.hot_set], hot, fraction, seed=n)
        with pinned(args.load_cores):
            point = asyncio.run(closed_loop(url, args.model, texts, args.repeat_concurrency, args.seconds,
                                            args.warmup, scenario=f"repeat-{fraction:g}",
                                            headers=auth_headers(args.api_key)))  # fmt: skip
        points.append(show(point))
    return points


def run_pure_hit(args: argparse.Namespace, url: str, corpus: list[str]) -> list[Point]:
    """Every request a cached single sentence: the gateway's own ceiling, driven by wrk if present,
    then the same load against a bare aiohttp app answering the same bytes (``bench/floor.py``):
    the HTTP floor that ceiling is a fraction of."""
    hot = hot_set(corpus, args.hot_set)
    headers = auth_headers(args.api_key)
    with pinned(args.load_cores):
        asyncio.run(closed_loop(url, args.model, lambda i: [hot[i % len(hot)]], 4, 1.0, 0.0,
                                headers=headers))  # fills the cache  # fmt: skip
    concurrency = args.hit_concurrency
    if not wrk.available():
        print("wrk not found (apt-get install wrk): the Python client below is the bottleneck", file=sys.stderr)
        with pinned(args.load_cores):
            point = asyncio.run(closed_loop(url, args.model, lambda i: [hot[i % len(hot)]], concurrency,
                                            args.seconds, args.warmup, scenario="hit-aiohttp",
                                            headers=headers))  # fmt: skip
        return [show(point)]
    bodies = [msgspec.json.encode({"model": args.model, "input": text}) for text in hot]
    with pinned(args.load_cores):  # wrk, a child, inherits the load's cores
        hit = wrk_point("hit-wrk", url, bodies, args, headers)
    with http_floor(one_answer(url, bodies[0], headers)) as floor_url:  # the floor on the server's cores
        with pinned(args.load_cores):
            floor = wrk_point("http-floor", floor_url, bodies, args, headers)
    return [hit, floor]


def wrk_point(scenario: str, url: str, bodies: list[bytes], args: argparse.Namespace,
              headers: dict[str, str]) -> Point:  # fmt: skip
    seconds = max(1, round(args.seconds))
    concurrency = args.hit_concurrency
    wrk.run(url, "/api/embed", bodies, connections=concurrency, seconds=1, headers=headers)  # warm connections
    result = wrk.run(url, "/api/embed", bodies, connections=concurrency, seconds=seconds, headers=headers)
    return show(Point(scenario, 1, concurrency, result.requests, result.errors, seconds, round(result.rps, 1),
                      round(result.rps, 1), round(result.p50_ms, 2), round(result.p95_ms, 2),
                      round(result.p99_ms, 2)))  # fmt: skip


def one_answer(url: str, body: bytes, headers: dict[str, str]) -> bytes:
    request = urllib.request.Request(url + "/api/embed", data=body,
                                     headers={"Content-Type": "application/json", **headers})  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        return bytes(response.read())
