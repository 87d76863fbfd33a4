"""The two loops that drive a server: closed (fixed concurrency) and open (Poisson arrivals).

- **Closed loop**: C clients, each sending its next request as soon as its last is answered. A
  point counts the requests that FINISH inside the measured window, whenever they were sent: at
  high concurrency one request can outlast the window (64 clients x 32 sentences at ~200
  sentences/s is ~10 s each), and counting only requests sent and finished inside it would report
  nothing. Clients still waiting when the window closes are stopped.
- **Open loop**: requests sent at the Poisson schedule's times whatever the server does, each
  latency measured from its SCHEDULED send time, so time a request spent waiting for the client
  to get to it counts (coordinated omission cannot hide queueing). The measured requests are
  those scheduled inside the window; the run waits for them, up to ``timeout``. ``send_lag``
  says how late the client itself sent: a large one means the generator, not the server, lagged.

Every answer goes through ``apis.Checker``; a failed one counts under its kind in ``failures``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import aiohttp

from bench.loadgen import apis
from bench.loadgen.mix import Request
from bench.loadgen.schedule import poisson_schedule
from bench.loadgen.stats import percentile, summarize
from bench.points import Point

Requests = Callable[[int], Request]  # request number -> what it sends
OPEN_CONNECTIONS = 1024  # bound on an open loop's sockets; waiting for one counts in its latency


@dataclass(frozen=True)
class Target:
    """A server and the API it speaks; ``dims`` fixes a model's expected dimension."""

    url: str
    api: str = "ollama"
    headers: dict[str, str] = field(default_factory=dict)
    dims: dict[str, int] = field(default_factory=dict)


@dataclass
class LoadResult:
    point: Point
    failures: dict[str, int]
    offered_rps: float = 0.0  # open loop: the schedule's rate
    send_lag_p99_ms: float = 0.0  # open loop: how late the client sent, 99th percentile
    mean_ms: float = 0.0  # open loop: mean latency from the scheduled send


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)

    def add(self, latency: float, problem: str | None) -> None:
        if problem is None:
            self.latencies.append(latency)
        else:
            self.failures[problem] += 1


async def send(session: aiohttp.ClientSession, target: Target, checker: apis.Checker, request: Request) -> str | None:
    """Post one request; None when its answer passed the checks, else the failure kind."""
    url = target.url + apis.route(target.api)
    data = apis.body(target.api, request.model, request.texts)
    try:
        async with session.post(url, data=data, headers={"Content-Type": "application/json"}) as answer:
            raw = await answer.read()
            return checker.problem(request.model, request.texts, answer.status, raw)
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return "transport"


def session_for(target: Target, connections: int, timeout: float) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=connections)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout),
                                 headers=target.headers)  # fmt: skip


async def closed_loop(target: Target, requests: Requests, *, concurrency: int, seconds: float, warmup: float,
                      scenario: str = "embed", timeout: float = 120.0) -> LoadResult:  # fmt: skip
    """``concurrency`` clients for ``warmup`` + ``seconds``; the window's finished requests count."""
    tally, counter, checker = Tally(), itertools.count(), apis.Checker(target.api, target.dims)
    start_measure = time.perf_counter() + warmup
    stop_at = start_measure + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        while True:
            request = requests(next(counter))
            sent = time.perf_counter()
            problem = await send(session, target, checker, request)
            done = time.perf_counter()
            if start_measure <= done <= stop_at:
                tally.add(done - sent, problem)

    async with session_for(target, concurrency, timeout) as session:
        clients = [asyncio.create_task(client(session)) for _ in range(concurrency)]
        await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
        await stop(clients)
    point = summarize(scenario, len(requests(0).texts), concurrency, tally.latencies, sum(tally.failures.values()),
                      seconds)  # fmt: skip
    return LoadResult(point, dict(tally.failures))


async def open_loop(target: Target, requests: Requests, *, rate: float, seconds: float, warmup: float,
                    seed: int = 0, scenario: str = "open", timeout: float = 60.0) -> LoadResult:  # fmt: skip
    """Requests at the Poisson times of ``rate`` per second; latency from each scheduled time."""
    tally, lags, checker = Tally(), [], apis.Checker(target.api, target.dims)
    offsets = poisson_schedule(rate, warmup + seconds, seed)

    async def one(session: aiohttp.ClientSession, i: int, at: float, measured: bool) -> None:
        lag = time.perf_counter() - at
        problem = await send(session, target, checker, requests(i))
        if measured:
            tally.add(time.perf_counter() - at, problem)  # from the scheduled time, not the send
            lags.append(lag)

    async with session_for(target, OPEN_CONNECTIONS, timeout) as session:
        origin = time.perf_counter() + 0.05
        sent: list[asyncio.Task[None]] = []
        for i, offset in enumerate(offsets):
            await asyncio.sleep(max(0.0, origin + offset - time.perf_counter()))
            sent.append(asyncio.create_task(one(session, i, origin + offset, offset >= warmup)))
        _, late = await asyncio.wait(sent, timeout=timeout)
        tally.failures["unfinished"] += len(late)  # still running after the bound: failed, not dropped
        await stop(list(late))
    measured = sum(1 for offset in offsets if offset >= warmup)
    point = summarize(scenario, len(requests(0).texts), 0, tally.latencies, sum(tally.failures.values()), seconds)
    lag_ms = percentile([lag * 1000 for lag in lags], 99) if lags else 0.0
    mean_ms = 1000 * sum(tally.latencies) / len(tally.latencies) if tally.latencies else 0.0
    return LoadResult(point, {k: v for k, v in tally.failures.items() if v}, round(measured / seconds, 1),
                      round(lag_ms, 2), round(mean_ms, 2))  # fmt: skip


async def stop(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
            raise outcome  # a client bug, not a measurement
