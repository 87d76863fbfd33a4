"""One reading of the appliance for the operator's views: ``GET /stats`` and ``GET /metrics``
read the same figures the same way.

``read(ctx)`` takes the worker cards, the cache and admission reports, the memory view and the
traffic windows once, and folds two slow references into the telemetry as it goes (the low-load
p99 and the restart marks, ``gateway/telemetry.py``), so the advice can compare the present with
them. ``system_stats`` shapes a reading as ``SystemStats`` with the scaling advice
(``gateway/scaling.py``); the Prometheus exporter (``gateway/prometheus.py``) exports one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from appliance.guards import available_memory, total_memory
from gateway import errors, scaling
from gateway.admission import AdmissionReport
from gateway.backend import CacheReport, WorkerCard
from gateway.context import Context
from gateway.stats import MemoryView, SystemStats, Traffic
from gateway.telemetry import WINDOW_S

# Restart causes that are not the appliance's own plan (a recycle is): the advice counts these.
UNPLANNED_RESTARTS = ("crash", "heartbeat", "boot_failure")


@dataclass(frozen=True, slots=True)
class Reading:
    at: float  # the telemetry's clock (unix seconds)
    uptime_s: float
    ready: bool
    draining: bool
    workers: list[WorkerCard]
    cache: CacheReport
    admission: AdmissionReport
    memory: MemoryView
    traffic: Traffic
    busy_share: float  # mean over the up workers, last minute
    restarts: dict[str, int]  # unplanned, by cause, over restarts_span_s
    restarts_span_s: float


def read(ctx: Context) -> Reading:
    telemetry, backend = ctx.telemetry, ctx.backend
    now = telemetry.clock()
    workers = backend.workers()
    traffic = telemetry.traffic(now)
    busy = busy_share(workers)
    telemetry.idle_p99_ms = scaling.idle_p99(telemetry.idle_p99_ms, busy, traffic.last_1m)
    restarts, span = telemetry.restarts_in_window(unplanned_restarts(workers), now)
    return Reading(at=now, uptime_s=round(time.time() - ctx.started, 3), ready=backend.is_ready(),
                   draining=backend.is_draining(), workers=workers, cache=backend.cache_stats(),
                   admission=ctx.admission.report(), memory=memory_view(ctx), traffic=traffic, busy_share=busy,
                   restarts=restarts, restarts_span_s=span)  # fmt: skip


def busy_share(workers: list[WorkerCard]) -> float:
    up = [w.busy_share for w in workers if w.up]
    return sum(up) / len(up) if up else 0.0


def unplanned_restarts(workers: list[WorkerCard]) -> dict[str, int]:
    totals = dict.fromkeys(UNPLANNED_RESTARTS, 0)
    for worker in workers:
        for cause in UNPLANNED_RESTARTS:
            totals[cause] += worker.restarts.get(cause, 0)
    return totals


def memory_view(ctx: Context) -> MemoryView:
    """The guard's last sample and floor; without a guard (an app built without one), a sample
    now and the configured floor."""
    guard = ctx.admission.guard
    available = guard.available if guard is not None else available_memory()
    floor = guard.floor if guard is not None else ctx.config.memory_floor
    return MemoryView(total_bytes=total_memory(), available_bytes=available, floor_bytes=floor,
                      headroom_bytes=available - floor)  # fmt: skip


def system_stats(ctx: Context, reading: Reading) -> SystemStats:
    telemetry = ctx.telemetry
    return SystemStats(uptime_s=reading.uptime_s, ready=reading.ready, draining=reading.draining,
                       workers=reading.workers, cache=reading.cache, admission=reading.admission,
                       traffic=reading.traffic, history=telemetry.history(reading.at),
                       queue_depth=sum(w.outstanding_inputs for w in reading.workers), memory=reading.memory,
                       scaling=scaling.advise(signals(ctx, reading)))  # fmt: skip


def signals(ctx: Context, reading: Reading) -> scaling.Signals:
    telemetry = ctx.telemetry
    refused = telemetry.error_counts(WINDOW_S, reading.at)
    hits, misses = telemetry.cache_counts(WINDOW_S, reading.at)
    last_1m = reading.traffic.last_1m
    return scaling.Signals(busy_share=reading.busy_share, p99_ms=last_1m.p99_ms, requests_1m=last_1m.requests,
                           idle_p99_ms=telemetry.idle_p99_ms, memory_refused=refused.get(errors.MemoryLow.type, 0),
                           rate_limited=refused.get(errors.RateLimited.type, 0),
                           queue_full=refused.get(errors.QueueFull.type, 0),
                           available_bytes=reading.memory.available_bytes, floor_bytes=reading.memory.floor_bytes,
                           cache_capacity_bytes=reading.cache.capacity_bytes if reading.cache.enabled else 0,
                           cache_bytes=reading.cache.bytes, cache_hits=hits, cache_misses=misses,
                           restarts=reading.restarts, restarts_span_s=reading.restarts_span_s)  # fmt: skip
