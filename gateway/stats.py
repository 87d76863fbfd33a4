"""``GET /stats``: the shape of the operator's view, one definition for the route, the status
page (``GET /``) and the OpenAPI description.

The first six fields are the view as it was before the traffic windows came; everything a
client read from them keeps its meaning. ``traffic``, ``history``, ``queue_depth``, ``memory`` and
``scaling`` come from the gateway's own request telemetry (``gateway/telemetry.py``) and the
scaling advice (``gateway/scaling.py``).
"""

from __future__ import annotations

import msgspec

from gateway.admission import AdmissionReport
from gateway.backend import CacheReport, WorkerCard


class TrafficWindow(msgspec.Struct, kw_only=True):
    """Requests that finished in the last ``seconds`` (work and operator routes alike, probes
    excluded: ``/health``, ``/ready``, ``/metrics``, ``/stats``, the page itself). Latency
    percentiles are over those requests, in milliseconds, 0 when there were none."""

    seconds: int
    requests: int = 0
    inputs: int = 0  # texts embedded or documents scored, cache hits included
    client_errors: int = 0  # answers 400-499
    server_errors: int = 0  # answers 500-599
    requests_per_s: float = 0.0
    inputs_per_s: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0


class Traffic(msgspec.Struct, kw_only=True):
    last_1m: TrafficWindow
    last_5m: TrafficWindow


class HistoryPoint(msgspec.Struct, kw_only=True):
    """One 10-second step of the last five minutes, oldest first: what the page's charts draw."""

    t: float  # unix time at the step's start
    requests: int = 0
    inputs: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    cache_hits: int = 0
    cache_misses: int = 0


class MemoryView(msgspec.Struct, kw_only=True):
    """System memory as the guard sees it: ``headroom_bytes`` = available - floor (negative while
    the guard refuses work)."""

    total_bytes: int = 0
    available_bytes: int = 0
    floor_bytes: int = 0
    headroom_bytes: int = 0


class Advice(msgspec.Struct, kw_only=True):
    """One piece of scaling advice with the measurement that triggered it. ``signal`` is a stable
    id a script may match on; ``figure`` is the measured value the message quotes."""

    signal: str  # workers_busy | latency_under_load | memory_refused | memory_low | cache_hit_rate | cache_full | rate_limited | queue_full | worker_restarts
    severity: str  # "info" | "warn"
    figure: float
    message: str


class SystemStats(msgspec.Struct, kw_only=True):
    """``GET /stats``. Worker counters come from each worker's own periodic Stats message (about
    once a second), so they trail the gateway's view by up to that long."""

    uptime_s: float
    ready: bool
    draining: bool
    workers: list[WorkerCard]
    cache: CacheReport
    admission: AdmissionReport = msgspec.field(default_factory=AdmissionReport)  # refusals by type
    traffic: Traffic | None = None  # None only from a gateway built without telemetry
    history: list[HistoryPoint] = msgspec.field(default_factory=list)
    queue_depth: int = 0  # inputs sent to workers and not yet answered, over all workers
    memory: MemoryView = msgspec.field(default_factory=MemoryView)
    scaling: list[Advice] = msgspec.field(default_factory=list)
