"""``gateway/telemetry.py`` on a fixed clock: per-route counts, the per-second windows and their
percentiles, the 10-second history, what stays out of the windows, error types, and the
restart marks."""

from __future__ import annotations

import pytest

from gateway import histogram
from gateway.backend import Timings
from gateway.telemetry import CLIENT_CLOSED, Served, Telemetry

T0 = 1_700_000_000.0  # a round unix time: history steps start on multiples of 10


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ns(ms: float) -> int:
    return int(ms * 1e6)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def telemetry(clock: Clock) -> Telemetry:
    return Telemetry(clock)


def test_each_answer_is_counted_by_route_method_and_status(telemetry: Telemetry) -> None:
    embed = telemetry.route("/api/embed")
    assert telemetry.route("/api/embed") is embed  # one set of counters per template
    for status in (200, 200, 422):
        telemetry.record(embed, "POST", status, ns(3), Served(2, 1, 1), "invalid_field" if status == 422 else None)
    telemetry.record(embed, "BREW", 405, ns(1), None, "method_not_allowed")
    assert embed.responses == {("POST", 200): 2, ("POST", 422): 1, ("other", 405): 1}
    assert embed.inputs == 6 and sum(embed.duration) == 4
    assert embed.duration_sum == pytest.approx(0.010)
    assert telemetry.errors == {"invalid_field": 1, "method_not_allowed": 1}


def test_stage_timings_are_recorded_only_when_a_worker_was_reached(telemetry: Telemetry) -> None:
    embed = telemetry.route("/api/embed")
    telemetry.record(embed, "POST", 200, ns(2), Served(1, 1, 0, None), None)  # all hits
    telemetry.record(embed, "POST", 200, ns(9), Served(1, 0, 1, Timings(1500, 250, 4000)), None)
    queue, tokenize, inference = embed.stages
    assert sum(queue) == sum(tokenize) == sum(inference) == 1
    assert queue[histogram.slot_of(0.0015)] == 1 and inference[histogram.slot_of(0.004)] == 1
    assert embed.stage_sums == pytest.approx([0.0015, 0.00025, 0.004])


def test_windows_count_the_last_minute_and_five_minutes(telemetry: Telemetry, clock: Clock) -> None:
    embed = telemetry.route("/api/embed")
    clock.now = T0 + 400  # the gateway has lived longer than both windows
    telemetry.record(embed, "POST", 200, ns(10), Served(4, 0, 4), None)  # 5m window only, below
    clock.now = T0 + 400 + 200
    for _ in range(30):
        telemetry.record(embed, "POST", 200, ns(1), Served(2, 2, 0), None)
    telemetry.record(embed, "POST", 429, ns(0.2), None, "rate_limited")
    telemetry.record(embed, "POST", 503, ns(0.2), None, "memory_low")
    traffic = telemetry.traffic(clock.now)
    one, five = traffic.last_1m, traffic.last_5m
    assert (one.seconds, one.requests, one.inputs, one.client_errors, one.server_errors) == (60, 32, 60, 1, 1)
    assert (five.seconds, five.requests, five.inputs) == (300, 33, 64)
    assert one.requests_per_s == pytest.approx(32 / 60, abs=1e-3) and one.inputs_per_s == 1.0
    assert five.requests_per_s == pytest.approx(33 / 300, abs=1e-3)
    clock.now += 120  # two minutes on, only the five-minute window still holds them
    assert telemetry.traffic(clock.now).last_1m.requests == 0
    assert telemetry.traffic(clock.now).last_5m.requests == 32  # the 10 ms one is older than 5 minutes now


def test_window_percentiles_come_from_the_latency_histogram(telemetry: Telemetry, clock: Clock) -> None:
    embed = telemetry.route("/v1/embeddings")
    clock.now = T0 + 1000
    for i in range(100):  # 1..100 ms: p50 ~ 50 ms, p95 ~ 95 ms, p99 ~ 99 ms
        telemetry.record(embed, "POST", 200, ns(i + 1), Served(1), None)
        clock.now += 0.5
    window = telemetry.traffic(clock.now).last_1m
    assert window.requests == 100
    assert window.p50_ms == pytest.approx(50, rel=0.12)
    assert window.p95_ms == pytest.approx(95, rel=0.12)
    assert window.p99_ms == pytest.approx(99, rel=0.12)
    assert window.p50_ms < window.p95_ms <= window.p99_ms


def test_a_young_gateway_divides_rates_by_the_time_it_has_lived(telemetry: Telemetry, clock: Clock) -> None:
    embed = telemetry.route("/api/embed")
    clock.now = T0 + 10
    for _ in range(20):
        telemetry.record(embed, "POST", 200, ns(1), Served(1), None)
    traffic = telemetry.traffic(clock.now)
    assert traffic.last_1m.requests_per_s == 2.0 and traffic.last_5m.requests_per_s == 2.0


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics", "/stats", "/"])
def test_probes_and_operator_reads_stay_out_of_the_windows(telemetry: Telemetry, clock: Clock, path: str) -> None:
    probe = telemetry.route(path)
    telemetry.record(probe, "GET", 200, ns(1), None, None)
    assert probe.responses == {("GET", 200): 1}  # counted for /metrics ...
    assert telemetry.traffic(clock.now).last_1m.requests == 0  # ... not in the traffic
    assert sum(p.requests for p in telemetry.history(clock.now)) == 0


def test_history_is_thirty_ten_second_steps_oldest_first(telemetry: Telemetry, clock: Clock) -> None:
    embed = telemetry.route("/api/embed")
    clock.now = T0 + 1000 + 3  # the current step started at T0 + 1000
    telemetry.record(embed, "POST", 200, ns(2), Served(3, 1, 2), None)
    clock.now = T0 + 1000 - 25  # a step 30 s earlier
    telemetry.record(embed, "POST", 200, ns(40), Served(1, 0, 1), None)
    telemetry.record(embed, "POST", 200, ns(40), Served(1, 0, 1), None)
    clock.now = T0 + 1000 + 7
    history = telemetry.history(clock.now)
    assert len(history) == 30
    assert [p.t for p in history] == [T0 + 1000 - 290 + 10 * i for i in range(30)]
    last, earlier = history[-1], history[-4]
    assert (last.requests, last.inputs, last.cache_hits, last.cache_misses) == (1, 3, 1, 2)
    assert (earlier.t, earlier.requests, earlier.inputs, earlier.cache_misses) == (T0 + 970, 2, 2, 2)
    assert earlier.p50_ms == pytest.approx(40, rel=0.12) and last.p99_ms == pytest.approx(2, rel=0.12)
    assert sum(p.requests for p in history) == 3


def test_old_seconds_are_overwritten_not_added_to(telemetry: Telemetry, clock: Clock) -> None:
    embed = telemetry.route("/api/embed")
    telemetry.record(embed, "POST", 200, ns(1), Served(1), None)
    clock.now += 300  # the same ring slot, five minutes later
    telemetry.record(embed, "POST", 200, ns(1), Served(1), None)
    assert telemetry.traffic(clock.now).last_5m.requests == 1


def test_error_types_and_cache_counts_over_a_window(telemetry: Telemetry, clock: Clock) -> None:
    embed = telemetry.route("/api/embed")
    clock.now = T0 + 500
    for kind in ("queue_full", "queue_full", "memory_low"):
        telemetry.record(embed, "POST", 429 if kind == "queue_full" else 503, ns(1), None, kind)
    telemetry.record(embed, "POST", 200, ns(1), Served(5, 3, 2), None)
    assert telemetry.error_counts(300, clock.now) == {"queue_full": 2, "memory_low": 1}
    assert telemetry.cache_counts(300, clock.now) == (3, 2)
    clock.now += 301
    assert telemetry.error_counts(300, clock.now) == {} and telemetry.cache_counts(300, clock.now) == (0, 0)
    assert telemetry.errors == {"queue_full": 2, "memory_low": 1}  # the cumulative count stays


def test_a_client_that_left_counts_as_499(telemetry: Telemetry, clock: Clock) -> None:
    stream = telemetry.route("/api/embed/stream")
    telemetry.record(stream, "POST", CLIENT_CLOSED, ns(50), Served(64, 0, 64), None)
    assert stream.responses == {("POST", 499): 1}
    assert telemetry.traffic(clock.now).last_1m.client_errors == 1


def test_restarts_are_counted_over_the_last_five_minutes(telemetry: Telemetry, clock: Clock) -> None:
    assert telemetry.restarts_in_window({"crash": 0}, T0 + 5) == ({"crash": 0}, 5)
    assert telemetry.restarts_in_window({"crash": 2}, T0 + 100) == ({"crash": 2}, 100)  # since start
    for t in range(110, 700, 10):  # a reader every 10 s; the crashes stay at 2
        telemetry.restarts_in_window({"crash": 2}, T0 + t)
    restarts, span = telemetry.restarts_in_window({"crash": 3, "heartbeat": 1}, T0 + 700)
    assert restarts == {"crash": 1, "heartbeat": 1} and 300 <= span <= 310
    assert len(telemetry.restart_marks) <= 32  # bounded: about one mark per 10 s of the window
