"""``gateway/readings.py``: one reading for ``/stats`` and ``/metrics`` from the context, on the
in-test backend and a fixed clock: memory from the guard, the busy share of the up workers,
unplanned restarts only, the low-load p99 reference, and advice in the ``SystemStats``."""

from __future__ import annotations

import time

from appliance.guards import MemoryGuard, total_memory
from gateway import readings
from gateway.admission import Admission
from gateway.backend import WorkerCard
from gateway.context import Context
from gateway.telemetry import Served, Telemetry
from fake_backend import MAIN, TEST_CONFIG, FakeBackend

GIB = 2**30


def card(index: int, up: bool, busy: float, restarts: dict[str, int]) -> WorkerCard:
    return WorkerCard(index=index, up=up, models=[MAIN], outstanding_inputs=index * 5, outstanding_tokens=0,
                      busy_share=busy, restarts=restarts)  # fmt: skip


def context(available: int, floor: int, workers: list[WorkerCard], clock: list[float]) -> Context:
    backend = FakeBackend()
    backend.workers = lambda: workers  # type: ignore[method-assign]
    guard = MemoryGuard(floor, probe=lambda: available)
    return Context(config=TEST_CONFIG, backend=backend, started=time.time(), admission=Admission(guard=guard),
                   telemetry=Telemetry(lambda: clock[0]))  # fmt: skip


def test_memory_comes_from_the_guard_and_headroom_is_available_less_floor() -> None:
    ctx = context(3 * GIB, 2 * GIB, [], [1000.0])
    memory = readings.read(ctx).memory
    assert (memory.available_bytes, memory.floor_bytes, memory.headroom_bytes) == (3 * GIB, 2 * GIB, GIB)
    assert memory.total_bytes == total_memory()


def test_busy_share_is_over_up_workers_and_restarts_count_only_unplanned_causes() -> None:
    workers = [card(0, True, 0.9, {"crash": 1, "recycle": 4}), card(1, True, 0.7, {"heartbeat": 2}),
               card(2, False, 0.0, {"boot_failure": 1})]  # fmt: skip
    reading = readings.read(context(8 * GIB, 0, workers, [1000.0]))
    assert reading.busy_share == 0.8
    assert reading.restarts == {"crash": 1, "heartbeat": 2, "boot_failure": 1}  # recycles are planned


def test_a_quiet_minute_sets_the_low_load_reference_and_a_slow_one_is_advised() -> None:
    clock = [1000.0]
    workers = [card(0, True, 0.1, {})]
    ctx = context(8 * GIB, 0, workers, clock)
    route = ctx.telemetry.route("/api/embed")
    for _ in range(200):  # a quiet minute: 200 requests of 10 ms
        ctx.telemetry.record(route, "POST", 200, 10_000_000, Served(1, 0, 1), None)
    readings.read(ctx)
    assert 9 < ctx.telemetry.idle_p99_ms < 11
    clock[0] += 120  # later, with the workers still idle-ish but requests slow: 50 ms
    workers[0] = card(0, True, 0.5, {})
    for _ in range(200):
        ctx.telemetry.record(route, "POST", 200, 50_000_000, Served(1, 0, 1), None)
    stats = readings.system_stats(ctx, readings.read(ctx))
    assert [a.signal for a in stats.scaling] == ["latency_under_load"]
    assert stats.scaling[0].figure > 4 and stats.queue_depth == 0
    assert stats.traffic is not None and stats.traffic.last_1m.requests == 200 and len(stats.history) == 30


def test_memory_close_to_the_floor_is_advised() -> None:
    stats = readings.system_stats(ctx := context(int(2.1 * GIB), 2 * GIB, [], [1000.0]), readings.read(ctx))
    assert [a.signal for a in stats.scaling] == ["memory_low"]
