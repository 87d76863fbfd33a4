"""``Telemetry``: every finished request, counted once, for ``/stats`` and ``/metrics``.

``gateway/app.py``'s wrapper calls ``Telemetry.record`` once per request, after the answer
(a stream: after its last event; a client that hung up: status ``CLIENT_CLOSED``). It records

- per route (the registered path template, so labels stay bounded; ``unmatched`` for paths no
  route takes): answers by method and status, and duration histograms (total, and the queue /
  tokenize / inference stages the workers reported, for requests that reached one); the
  cumulative counts ``/metrics`` exports;
- per second, for the last ``WINDOW_S`` seconds, in a ring indexed by the wall-clock second:
  requests, inputs, client and server errors, error types, cache hits and misses and a latency
  histogram (``gateway/histogram.py``). ``/stats`` reads its traffic windows and its 10-second
  history from them. Probes and operator reads (``UNWINDOWED``) stay out of the windows: a
  monitor polling ``/stats`` would otherwise be most of an idle appliance's traffic.

What a route served reaches the wrapper through the request (``SERVED``, set by
``gateway/routes/answers.py``'s ``respond_served`` or the stream), and an error's stable type
through ``ERROR_TYPE`` (set where errors become responses). Cost per request: a bisect, a few
integer additions and one dict update keyed by a small tuple; no lock (one event loop); a fresh
bucket once a second. About 2 us on the dev box, 14-19x an empty call with the same arguments
(``python -m bench telemetry``), against the ~100 us a cache hit costs. Reads (windows,
history) merge at most 300 small lists.

Two slow-moving references for the scaling advice also live here, updated when ``/stats`` or
``/metrics`` is read: the p99 seen at low load (``idle_p99_ms``) and marks of the workers'
unplanned restarts, so that a restart count can be given over the last minutes
(``restarts_in_window``).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import deque
from typing import Callable

import msgspec
from aiohttp import web

from gateway import histogram
from gateway.backend import Timings
from gateway.histogram import BOUNDS
from gateway.stats import HistoryPoint, Traffic, TrafficWindow

Clock = Callable[[], float]

WINDOW_S = 300  # the longest window: five minutes of per-second buckets
SHORT_WINDOW_S = 60
HISTORY_STEP_S = 10
# Probes and operator reads: counted per route, kept out of the traffic windows.
UNWINDOWED = frozenset({"/health", "/ready", "/metrics", "/stats", "/", "/openapi.json", "/docs", "/docs/docs.js",
                        "/docs/docs.css", "/queue-status", "/cache-stats"})  # fmt: skip
UNMATCHED = "unmatched"  # the route label of requests no registered route took
CLIENT_CLOSED = 499  # the client left before its answer (nginx's code for it)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
OTHER_METHOD = "other"  # any other method token: labels must stay bounded
STAGES = ("queue", "tokenize", "inference")
RESTART_MARK_EVERY_S = 10.0


class Served(msgspec.Struct, gc=False):
    """What one request served: inputs (texts or documents, cache hits included), how many came
    from the result cache and how many were computed for it, and the worker stages (None when
    no worker was reached: every input a hit)."""

    inputs: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    timings: Timings | None = None


SERVED = web.RequestKey("served", Served)
ERROR_TYPE = web.RequestKey("error_type", str)


class Second:
    """One wall-clock second of windowed requests."""

    __slots__ = ("second", "requests", "inputs", "client_errors", "server_errors", "cache_hits", "cache_misses",
                 "latency", "errors")  # fmt: skip

    def __init__(self, second: int = -1) -> None:
        self.second = second
        self.requests = self.inputs = self.client_errors = self.server_errors = 0
        self.cache_hits = self.cache_misses = 0
        self.latency = histogram.empty()
        self.errors: dict[str, int] | None = None  # error type -> count, made at the second's first error


class RouteCounters:
    """Cumulative counts of one route since start: what ``/metrics`` exports."""

    __slots__ = ("route", "windowed", "responses", "inputs", "duration", "duration_sum", "stages", "stage_sums")

    def __init__(self, route: str) -> None:
        self.route = route
        self.windowed = route not in UNWINDOWED
        self.responses: dict[tuple[str, int], int] = {}  # (method, status) -> answers
        self.inputs = 0
        self.duration = histogram.empty()
        self.duration_sum = 0.0
        self.stages = [histogram.empty() for _ in STAGES]  # queue, tokenize, inference
        self.stage_sums = [0.0 for _ in STAGES]


class Telemetry:
    def __init__(self, clock: Clock = time.time) -> None:
        """``clock``: wall-clock seconds (the history's step times are unix times)."""
        self.clock = clock
        self.started = clock()
        self.ring = [Second() for _ in range(WINDOW_S)]
        self.routes: dict[str, RouteCounters] = {}
        self.errors: dict[str, int] = {}  # error type -> answers since start
        self.idle_p99_ms = 0.0  # p99 of a minute at low load; 0 until one was seen
        self.restart_marks: deque[tuple[float, dict[str, int]]] = deque([(self.started, {})])

    def route(self, path: str) -> RouteCounters:
        """The counters of ``path`` (a registered template), made once when it is registered."""
        counters = self.routes.get(path)
        if counters is None:
            counters = self.routes[path] = RouteCounters(path)
        return counters

    # ---- the hot path ------------------------------------------------------------------------
    # One function, names bound locally, no helper calls on the common path: a record is on the
    # path of every request, and each Python call costs about what the rest of a step does.
    def record(self, route: RouteCounters, method: str, status: int, elapsed_ns: int,
               served: Served | None, error_type: str | None) -> None:  # fmt: skip
        seconds = elapsed_ns * 1e-9
        slot = bisect_left(BOUNDS, seconds)
        key = (method, status) if method in METHODS else (OTHER_METHOD, status)
        responses = route.responses
        responses[key] = responses.get(key, 0) + 1
        route.duration[slot] += 1
        route.duration_sum += seconds
        if served is not None:
            route.inputs += served.inputs
            if (timings := served.timings) is not None:  # the stages, unrolled: no loop, no call
                stages, sums = route.stages, route.stage_sums
                queue, tokenize, inference = (timings.queue_us * 1e-6, timings.tokenize_us * 1e-6,
                                              timings.compute_us * 1e-6)  # fmt: skip
                stages[0][bisect_left(BOUNDS, queue)] += 1
                stages[1][bisect_left(BOUNDS, tokenize)] += 1
                stages[2][bisect_left(BOUNDS, inference)] += 1
                sums[0] += queue
                sums[1] += tokenize
                sums[2] += inference
        if error_type is not None:
            self.errors[error_type] = self.errors.get(error_type, 0) + 1
        if not route.windowed:
            return
        now = int(self.clock())
        second = self.ring[now % WINDOW_S]
        if second.second != now:
            second = self.ring[now % WINDOW_S] = Second(now)
        second.requests += 1
        second.latency[slot] += 1
        if served is not None:
            second.inputs += served.inputs
            second.cache_hits += served.cache_hits
            second.cache_misses += served.cache_misses
        if status >= 400:
            self._second_error(second, status, error_type)

    @staticmethod
    def _second_error(second: Second, status: int, error_type: str | None) -> None:
        if status >= 500:
            second.server_errors += 1
        else:
            second.client_errors += 1
        if error_type is not None:
            if second.errors is None:
                second.errors = {}
            second.errors[error_type] = second.errors.get(error_type, 0) + 1

    # ---- reads -------------------------------------------------------------------------------
    def seconds(self, span: int, now: float) -> list[Second]:
        """The recorded seconds among the last ``span`` (the current one included)."""
        last = int(now)
        return [s for s in self.ring if last - span < s.second <= last]

    def window(self, span: int, now: float) -> TrafficWindow:
        seconds = self.seconds(span, now)
        latency = histogram.merged(s.latency for s in seconds)
        requests = sum(s.requests for s in seconds)
        inputs = sum(s.inputs for s in seconds)
        covered = max(1.0, min(float(span), now - self.started))  # a young gateway has not lived `span` yet
        return TrafficWindow(seconds=span, requests=requests, inputs=inputs,
                             client_errors=sum(s.client_errors for s in seconds),
                             server_errors=sum(s.server_errors for s in seconds),
                             requests_per_s=round(requests / covered, 3), inputs_per_s=round(inputs / covered, 3),
                             p50_ms=ms(latency, 0.50), p95_ms=ms(latency, 0.95), p99_ms=ms(latency, 0.99))  # fmt: skip

    def traffic(self, now: float) -> Traffic:
        return Traffic(last_1m=self.window(SHORT_WINDOW_S, now), last_5m=self.window(WINDOW_S, now))

    def history(self, now: float) -> list[HistoryPoint]:
        """Ten-second steps over the last five minutes, oldest first; the last step is the
        current one, still filling."""
        current = int(now) // HISTORY_STEP_S * HISTORY_STEP_S
        steps = WINDOW_S // HISTORY_STEP_S
        by_step: dict[int, list[Second]] = {}
        for second in self.seconds(WINDOW_S, now):
            by_step.setdefault(second.second // HISTORY_STEP_S * HISTORY_STEP_S, []).append(second)
        return [history_point(start, by_step.get(start, []))
                for start in range(current - (steps - 1) * HISTORY_STEP_S, current + 1, HISTORY_STEP_S)]  # fmt: skip

    def error_counts(self, span: int, now: float) -> dict[str, int]:
        """Answers by error type over the last ``span`` seconds (windowed routes)."""
        counts: dict[str, int] = {}
        for second in self.seconds(span, now):
            for kind, count in (second.errors or {}).items():
                counts[kind] = counts.get(kind, 0) + count
        return counts

    def cache_counts(self, span: int, now: float) -> tuple[int, int]:
        """(hits, misses) of the inputs served over the last ``span`` seconds."""
        seconds = self.seconds(span, now)
        return sum(s.cache_hits for s in seconds), sum(s.cache_misses for s in seconds)

    # ---- slow references for the scaling advice --------------------------------------------------
    def restarts_in_window(self, totals: dict[str, int], now: float) -> tuple[dict[str, int], float]:
        """(restarts by cause, over how many seconds): ``totals`` (unplanned restarts by cause
        since start) less those at the newest mark at least ``WINDOW_S`` old, or at the start.
        Marks are taken at most every ``RESTART_MARK_EVERY_S`` by whoever reads, so the span
        may exceed the window when nobody read for a while; the advice quotes the span."""
        marks = self.restart_marks
        if now - marks[-1][0] >= RESTART_MARK_EVERY_S:
            marks.append((now, dict(totals)))
        while len(marks) > 1 and now - marks[1][0] >= WINDOW_S:
            marks.popleft()
        since, base = marks[0]
        return {cause: count - base.get(cause, 0) for cause, count in totals.items()}, now - since


def ms(latency: list[int], q: float) -> float:
    return round(histogram.percentile(latency, q) * 1000, 3)


def history_point(start: int, seconds: list[Second]) -> HistoryPoint:
    latency = histogram.merged(s.latency for s in seconds)
    return HistoryPoint(t=float(start), requests=sum(s.requests for s in seconds),
                        inputs=sum(s.inputs for s in seconds), p50_ms=ms(latency, 0.50), p99_ms=ms(latency, 0.99),
                        cache_hits=sum(s.cache_hits for s in seconds),
                        cache_misses=sum(s.cache_misses for s in seconds))  # fmt: skip
