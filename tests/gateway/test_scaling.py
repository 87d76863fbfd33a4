"""``gateway/scaling.py``: each rule alone, on hand-made signals (pure: no clock, no app)."""

from __future__ import annotations

import pytest

from gateway import scaling
from gateway.scaling import Signals
from gateway.stats import TrafficWindow

GIB = 2**30
QUIET = Signals(busy_share=0.2, p99_ms=40.0, requests_1m=600, idle_p99_ms=35.0, available_bytes=40 * GIB,
                floor_bytes=2 * GIB, cache_capacity_bytes=GIB, cache_bytes=GIB // 2, cache_hits=600,
                cache_misses=400, restarts={"crash": 0, "heartbeat": 0, "boot_failure": 0},
                restarts_span_s=300)  # fmt: skip


def only(signals: Signals) -> scaling.Advice:
    advice = scaling.advise(signals)
    assert len(advice) == 1, advice
    return advice[0]


def with_(**changes: object) -> Signals:
    return Signals(**{**QUIET.__dict__, **changes})


def test_no_advice_when_all_is_well() -> None:
    assert scaling.advise(QUIET) == []
    assert scaling.advise(Signals()) == []  # an idle appliance with nothing measured


def test_busy_workers_quote_the_busy_share_and_the_latency_ratio() -> None:
    advice = only(with_(busy_share=0.94, p99_ms=108.5))
    assert (advice.signal, advice.severity, advice.figure) == ("workers_busy", "warn", 0.94)
    assert advice.message == "workers busy 94% of the last minute, p99 3.1x its idle value: add a GPU or a worker"
    plain = only(with_(busy_share=0.9, p99_ms=36.0))  # latency as at idle: not quoted
    assert plain.message == "workers busy 90% of the last minute: add a GPU or a worker"
    assert scaling.advise(with_(busy_share=scaling.BUSY_HIGH - 0.01)) == []


def test_latency_under_load_while_workers_are_not_busy() -> None:
    advice = only(with_(busy_share=0.5, p99_ms=140.0))
    assert (advice.signal, advice.figure) == ("latency_under_load", 4.0)
    assert "p99 140 ms over the last minute is 4.0x its idle value (35 ms)" in advice.message
    assert "busy only 50%" in advice.message
    assert scaling.advise(with_(p99_ms=35.0 * scaling.LATENCY_RATIO_HIGH * 0.99)) == []
    assert scaling.advise(with_(p99_ms=140.0, requests_1m=scaling.MIN_REQUESTS - 1)) == []  # too few to judge
    assert scaling.advise(with_(p99_ms=140.0, idle_p99_ms=0.0)) == []  # no reference yet


def test_the_idle_reference_moves_only_at_low_load_over_enough_requests() -> None:
    window = TrafficWindow(seconds=60, requests=500, p99_ms=22.0)
    assert scaling.idle_p99(30.0, 0.1, window) == 22.0
    assert scaling.idle_p99(30.0, 0.5, window) == 30.0  # busy: not a low-load figure
    assert scaling.idle_p99(30.0, 0.1, TrafficWindow(seconds=60, requests=10, p99_ms=22.0)) == 30.0


def test_memory_refusals_are_quoted() -> None:
    advice = only(with_(memory_refused=12))
    assert (advice.signal, advice.figure) == ("memory_refused", 12)
    assert advice.message == ("memory guard refused 12 requests in the last 5 minutes: add memory or lower "
                              "max_pending_inputs")  # fmt: skip


@pytest.mark.parametrize("available_gib, word", [(2.1, "within 10% of"), (1.5, "under")])
def test_memory_near_or_under_the_floor(available_gib: float, word: str) -> None:
    advice = only(with_(available_bytes=int(available_gib * GIB)))
    assert advice.signal == "memory_low" and advice.figure == int(available_gib * GIB) - 2 * GIB
    assert f"available memory {available_gib:.2f} GiB is {word} the floor of 2.00 GiB" in advice.message
    assert scaling.advise(with_(available_bytes=int(2.3 * GIB))) == []
    assert scaling.advise(with_(available_bytes=GIB, floor_bytes=0)) == []  # no guard, no floor


def test_a_full_cache_that_hits_often_should_grow() -> None:
    advice = only(with_(cache_bytes=GIB, cache_hits=710, cache_misses=290))
    assert (advice.signal, advice.severity, advice.figure) == ("cache_full", "info", 0.71)
    assert advice.message == "cache hit rate 71% with the cache full: raise cache_bytes"
    assert scaling.advise(with_(cache_bytes=GIB // 2, cache_hits=710, cache_misses=290)) == []  # room left
    assert scaling.advise(with_(cache_bytes=GIB, cache_hits=71, cache_misses=29)) == []  # too few inputs


def test_a_full_cache_that_hardly_hits_is_memory_wasted() -> None:
    advice = only(with_(cache_bytes=GIB, cache_hits=30, cache_misses=2970))
    assert (advice.signal, advice.figure) == ("cache_hit_rate", 0.01)
    assert advice.message.startswith("cache hit rate 1.0% of 3000 inputs in the last 5 minutes with the cache full")
    assert scaling.advise(with_(cache_bytes=GIB, cache_hits=30, cache_misses=2970, cache_capacity_bytes=0)) == []


def test_rate_limit_refusals_are_quoted() -> None:
    advice = only(with_(rate_limited=40))
    assert (advice.signal, advice.severity, advice.figure) == ("rate_limited", "info", 40)
    assert advice.message.startswith("rate limits refused 40 requests in the last 5 minutes")


def test_queue_full_refusals_are_quoted() -> None:
    advice = only(with_(queue_full=30))
    assert (advice.signal, advice.severity, advice.figure) == ("queue_full", "warn", 30)
    assert advice.message.startswith("full queues refused 30 requests in the last 5 minutes: add a worker")


def test_unplanned_restarts_are_quoted_by_cause() -> None:
    advice = only(with_(restarts={"crash": 2, "heartbeat": 1, "boot_failure": 0}, restarts_span_s=290))
    assert (advice.signal, advice.figure) == ("worker_restarts", 3)
    assert advice.message.startswith("3 unplanned worker restarts in the last 5 minutes (crash 2, heartbeat 1)")


def test_several_rules_speak_in_a_fixed_order() -> None:
    signals = with_(busy_share=0.95, queue_full=5, memory_refused=1, restarts={"crash": 1}, restarts_span_s=300)
    assert [a.signal for a in scaling.advise(signals)] == ["workers_busy", "memory_refused", "queue_full",
                                                           "worker_restarts"]  # fmt: skip
