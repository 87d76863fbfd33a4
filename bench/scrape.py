"""`python -m bench serve --scrape-metrics`: what scraping ``/metrics`` once a second costs the
served throughput.

One appliance (cache off, as the throughput sweep), the c=32 single-sentence point run four
times, interleaved: without a scraper, with one, without, with. The scraper is a client that
GETs ``/metrics`` every ``SCRAPE_EVERY_S`` during the measured window, as Prometheus would. The
figure is the mean throughput with the scraper over the mean without (and each round's own
ratio, its two runs being neighbours in time); the noise is the larger relative difference
between the two runs of one condition, from the same run. The scraper costs nothing measurable
when the ratio is within that noise of 1.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import aiohttp

from bench.loadgen import Texts, closed_loop_point, corpus_texts, pinned
from bench.points import Point, show
from bench.target import auth_headers

SCRAPE_EVERY_S = 1.0
CONCURRENCY = 32
ROUNDS = 2  # each condition twice, interleaved: the two runs of one condition give the noise


async def scrape_loop(url: str, headers: dict[str, str], stop: asyncio.Event) -> list[float]:
    """GET /metrics every SCRAPE_EVERY_S until ``stop``; each scrape's duration in seconds."""
    durations: list[float] = []
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=30)) as session:
        while not stop.is_set():
            started = time.perf_counter()
            async with session.get(url + "/metrics") as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"/metrics answered {response.status}")
            durations.append(time.perf_counter() - started)
            try:
                await asyncio.wait_for(stop.wait(), SCRAPE_EVERY_S)
            except asyncio.TimeoutError:
                pass
    return durations


async def scraped_point(args: argparse.Namespace, url: str, texts: Texts, scenario: str,
                        scrape: bool) -> tuple[Point, list[float]]:  # fmt: skip
    headers = auth_headers(args.api_key)
    stop = asyncio.Event()
    scraper = asyncio.create_task(scrape_loop(url, headers, stop)) if scrape else None
    try:
        point = await closed_loop_point(url, args.model, texts, CONCURRENCY, args.seconds, args.warmup,
                                        scenario=scenario, headers=headers)  # fmt: skip
    finally:
        stop.set()
    return point, (await scraper if scraper is not None else [])


def run_scrape_points(args: argparse.Namespace, url: str, corpus: list[str]) -> tuple[list[Point], dict[str, object]]:
    """The interleaved runs' points and the summary: both runs of each condition, the ratio, the noise."""
    points: list[Point] = []
    runs: dict[bool, list[float]] = {False: [], True: []}
    durations: list[float] = []
    for _ in range(ROUNDS):
        for scrape in (False, True):
            with pinned(getattr(args, "load_cores", None)):  # the load's cores where serve split them
                point, took = asyncio.run(scraped_point(args, url, corpus_texts(corpus, 1),
                                                        "scraped" if scrape else "unscraped", scrape))  # fmt: skip
            points.append(show(point))
            runs[scrape].append(point.rps)
            durations += took
    return points, summary(runs, durations)


def summary(runs: dict[bool, list[float]], durations: list[float]) -> dict[str, object]:
    without, scraped = runs[False], runs[True]
    ratio = statistics.mean(scraped) / statistics.mean(without) if statistics.mean(without) else 0.0
    noise = max(spread(without), spread(scraped))
    paired = [round(w / wo, 3) if wo else 0.0 for w, wo in zip(scraped, without)]
    return {"concurrency": CONCURRENCY, "without_rps": without, "with_rps": scraped, "ratio": round(ratio, 3),
            "paired_ratios": paired, "noise": round(noise, 3), "within_noise": abs(ratio - 1) <= noise,
            "scrapes": len(durations),
            "scrape_p50_ms": round(statistics.median(durations) * 1000, 2) if durations else None,
            "scrape_max_ms": round(max(durations) * 1000, 2) if durations else None}  # fmt: skip


def spread(rps: list[float]) -> float:
    """The relative difference between runs of one condition: max over min, less one."""
    return max(rps) / min(rps) - 1 if min(rps) > 0 else 0.0
