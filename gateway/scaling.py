"""Scaling advice: what the measurements say to change, each piece quoting the figure that
triggered it. Pure: ``advise(Signals) -> list[Advice]``, no clock, no I/O; ``gateway/readings.py``
gathers the signals from the worker cards, the telemetry windows, the cache and the guard.

One rule per signal (``Advice.signal``), thresholds named below; nothing is said when all is well.

- ``workers_busy``: the up workers computed for ``BUSY_HIGH`` or more of the last minute on
  average. The model is the bottleneck: add a GPU or a worker.
- ``latency_under_load``: the last minute's p99 is ``LATENCY_RATIO_HIGH`` times the p99 seen at
  low load (``idle_p99``), while the workers are NOT that busy: requests wait elsewhere (the
  gateway's cores, the router's queue), so another worker alone may not help.
- ``memory_refused``, ``rate_limited``, ``queue_full``: that many requests were refused for that
  reason in the last five minutes.
- ``memory_low``: available memory is within ``HEADROOM_SHARE`` of the guard's floor (or under it).
- ``cache_full``: the cache is full while its hit rate is worth having: a bigger one would hit more.
- ``cache_hit_rate``: a full cache that hardly ever hits: its memory would serve better elsewhere.
- ``worker_restarts``: workers restarted unplanned (crash, silent, boot failure) recently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.stats import Advice, TrafficWindow

BUSY_HIGH = 0.85  # share of the last minute the workers computed
LOW_LOAD_BUSY = 0.30  # below this, a minute's p99 is the low-load reference
LATENCY_RATIO_HIGH = 3.0  # p99 over its low-load value
MIN_REQUESTS = 100  # a p99 of fewer requests is one slow request's duration
HEADROOM_SHARE = 0.10  # memory headroom under this share of the floor: the guard is about to refuse
CACHE_FULL_SHARE = 0.95  # bytes held over capacity
CACHE_HIT_WORTH = 0.30  # a full cache hitting this often would hit more if bigger
CACHE_HIT_POOR = 0.05  # a full cache hitting less than this is mostly misses
MIN_CACHE_INPUTS = 1000  # inputs over five minutes before a hit rate is judged
WINDOW_MINUTES = 5
WARN, INFO = "warn", "info"


@dataclass(frozen=True)
class Signals:
    """The measurements the rules read. Counts over the last five minutes unless named."""

    busy_share: float = 0.0  # mean over the up workers, last minute (0..1)
    p99_ms: float = 0.0  # last minute
    requests_1m: int = 0
    idle_p99_ms: float = 0.0  # the low-load reference; 0 until one was seen
    memory_refused: int = 0
    rate_limited: int = 0
    queue_full: int = 0
    available_bytes: int = 0
    floor_bytes: int = 0  # 0: no memory guard
    cache_capacity_bytes: int = 0  # 0: no cache
    cache_bytes: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    restarts: dict[str, int] = field(default_factory=dict)  # unplanned, by cause, over restarts_span_s
    restarts_span_s: float = 0.0


def idle_p99(previous_ms: float, busy_share: float, last_1m: TrafficWindow) -> float:
    """The low-load p99 reference after this reading: the last minute's p99 when the workers
    were mostly idle over enough requests, else unchanged."""
    if busy_share < LOW_LOAD_BUSY and last_1m.requests >= MIN_REQUESTS:
        return last_1m.p99_ms
    return previous_ms


def advise(s: Signals) -> list[Advice]:
    rules = (workers_busy, latency_under_load, memory_refused, memory_low, cache_full, cache_hit_rate,
             rate_limited, queue_full, worker_restarts)  # fmt: skip
    return [advice for rule in rules if (advice := rule(s)) is not None]


def latency_ratio(s: Signals) -> float:
    """p99 over its low-load value, 0 when either is unknown or too few requests were seen."""
    if s.idle_p99_ms <= 0 or s.requests_1m < MIN_REQUESTS:
        return 0.0
    return s.p99_ms / s.idle_p99_ms


def workers_busy(s: Signals) -> Advice | None:
    if s.busy_share < BUSY_HIGH:
        return None
    ratio = latency_ratio(s)
    latency = f", p99 {ratio:.1f}x its idle value" if ratio >= 1.5 else ""
    return Advice(signal="workers_busy", severity=WARN, figure=round(s.busy_share, 3),
                  message=f"workers busy {s.busy_share:.0%} of the last minute{latency}: "
                          "add a GPU or a worker")  # fmt: skip


def latency_under_load(s: Signals) -> Advice | None:
    ratio = latency_ratio(s)
    if ratio < LATENCY_RATIO_HIGH or s.busy_share >= BUSY_HIGH:  # busy workers: workers_busy says it
        return None
    return Advice(signal="latency_under_load", severity=WARN, figure=round(ratio, 2),
                  message=f"p99 {s.p99_ms:.0f} ms over the last minute is {ratio:.1f}x its idle value "
                          f"({s.idle_p99_ms:.0f} ms) while workers are busy only {s.busy_share:.0%}: requests "
                          "wait outside the workers (gateway cores, queue): check gateway_cores and "
                          "the load")  # fmt: skip


def memory_refused(s: Signals) -> Advice | None:
    if not s.memory_refused:
        return None
    return Advice(signal="memory_refused", severity=WARN, figure=s.memory_refused,
                  message=f"memory guard refused {s.memory_refused} requests in the last {WINDOW_MINUTES} minutes: "
                          "add memory or lower max_pending_inputs")  # fmt: skip


def memory_low(s: Signals) -> Advice | None:
    if s.floor_bytes <= 0:
        return None
    headroom = s.available_bytes - s.floor_bytes
    if headroom >= s.floor_bytes * HEADROOM_SHARE:
        return None
    return Advice(signal="memory_low", severity=WARN, figure=headroom,
                  message=f"available memory {s.available_bytes / 2**30:.2f} GiB is "
                          f"{'under' if headroom < 0 else 'within 10% of'} the floor of {s.floor_bytes / 2**30:.2f} "
                          "GiB (memory_floor): add memory, or lower cache_bytes or the worker count")  # fmt: skip


def cache_hit_share(s: Signals) -> tuple[float, bool]:
    """(hit rate over five minutes, whether the cache is full and that rate means something)."""
    looked_up = s.cache_hits + s.cache_misses
    full = s.cache_capacity_bytes > 0 and s.cache_bytes >= s.cache_capacity_bytes * CACHE_FULL_SHARE
    return (s.cache_hits / looked_up if looked_up else 0.0), full and looked_up >= MIN_CACHE_INPUTS


def cache_full(s: Signals) -> Advice | None:
    rate, judged = cache_hit_share(s)
    if not judged or rate < CACHE_HIT_WORTH:
        return None
    return Advice(signal="cache_full", severity=INFO, figure=round(rate, 3),
                  message=f"cache hit rate {rate:.0%} with the cache full: raise cache_bytes")  # fmt: skip


def cache_hit_rate(s: Signals) -> Advice | None:
    rate, judged = cache_hit_share(s)
    if not judged or rate >= CACHE_HIT_POOR:
        return None
    inputs = s.cache_hits + s.cache_misses
    return Advice(signal="cache_hit_rate", severity=INFO, figure=round(rate, 3),
                  message=f"cache hit rate {rate:.1%} of {inputs} inputs in the last {WINDOW_MINUTES} minutes "
                          "with the cache full: inputs rarely repeat; a smaller cache_bytes frees memory")  # fmt: skip


def rate_limited(s: Signals) -> Advice | None:
    if not s.rate_limited:
        return None
    return Advice(signal="rate_limited", severity=INFO, figure=s.rate_limited,
                  message=f"rate limits refused {s.rate_limited} requests in the last {WINDOW_MINUTES} minutes: "
                          "raise rate_limit_rpm or rate_limit_ipm if those clients are expected")  # fmt: skip


def queue_full(s: Signals) -> Advice | None:
    if not s.queue_full:
        return None
    return Advice(signal="queue_full", severity=WARN, figure=s.queue_full,
                  message=f"full queues refused {s.queue_full} requests in the last {WINDOW_MINUTES} minutes: "
                          "add a worker, or raise max_pending_inputs if latency allows")  # fmt: skip


def worker_restarts(s: Signals) -> Advice | None:
    total = sum(s.restarts.values())
    if not total:
        return None
    causes = ", ".join(f"{cause} {count}" for cause, count in sorted(s.restarts.items()) if count)
    minutes = max(1, round(s.restarts_span_s / 60))
    return Advice(signal="worker_restarts", severity=WARN, figure=total,
                  message=f"{total} unplanned worker restarts in the last {minutes} minutes ({causes}): "
                          "read the appliance's log for why")  # fmt: skip
