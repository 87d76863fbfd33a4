"""``GET /metrics``'s exposition: the appliance's state as Prometheus metric families.

``Exporter`` is a prometheus-client Collector in a registry of its own (one per app, never the
process-global default, so two apps in one process, as in the tests, never mix). Nothing is
counted for it per request: at scrape time it reads what already exists, namely the telemetry's
per-route counters (``gateway/telemetry.py``), one ``Reading`` (``gateway/readings.py``: worker
cards, cache, admission, memory) and the jobs' queue, which the route awaits first because a
Collector is synchronous. prometheus-client renders the text format, with its escaping and
histogram layout. The registry also holds prometheus-client's ``ProcessCollector``: the
gateway process's own ``process_*`` figures (CPU, resident memory, open files, start time).

Rendering runs off the event loop: building the families and formatting a few hundred lines
took about 10 ms with two workers, a stall for every request in flight. ``render`` takes a
``Scrape`` on the loop (the reading, which is built fresh, plus copies of the telemetry counters
the loop keeps adding to: a thread iterating a dict the loop resizes would fail), then formats
it on the exporter's one render thread, so two scrapes never render at once and ``collect``
reads only that copy. The thread still shares the GIL with the loop, which gets it back at
least every switch interval (5 ms): a scrape costs the loop slices, not one 10 ms block.
Caching the rendered bytes for a while would make fewer renders, not shorter stalls.

Names follow Prometheus's conventions: the ``appliance_`` prefix, base units (``_seconds``,
``_bytes``), ``_total`` on counters. Labels stay bounded: ``route`` is a registered path
template, ``worker`` a slot index, ``status``, ``method``, ``cause``, ``type``, ``state`` and
``model`` come from fixed sets. Worker counters restart at 0 with a respawned worker, which
Prometheus's ``rate`` treats as a counter reset.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Iterable, Iterator, Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from appliance.protocol import BATCH_SIZE_BOUNDS, BATCH_TOKEN_BOUNDS
from gateway import errors, histogram
from gateway.backend import CacheCounts, WorkerCard
from gateway.context import Context
from gateway.jobs.model import JobQueue
from gateway.readings import Reading
from gateway.telemetry import STAGES, RouteCounters

RESTART_CAUSES = ("crash", "heartbeat", "recycle", "boot_failure")
WORKER_STATES = ("stopped", "starting", "ready", "draining", "failed")
# refusals at the door: admission's own (gateway/admission.py) and the router's full queues
ROUTER_REFUSALS = (errors.QueueFull.type,)


@dataclass(frozen=True, slots=True)
class Scrape:
    """What one exposition shows, taken on the event loop; the render thread reads only this."""

    reading: Reading
    routes: list[RouteCounters]  # copies: the loop keeps counting into the originals
    errors: dict[str, int]
    jobs: JobQueue | None
    started: float  # the gateway's start, unix seconds


class Exporter:
    """The app's /metrics registry, the Collector in it, and the one thread that renders it."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        ProcessCollector(registry=self.registry)
        # one thread: scrapes render one at a time, so ``scrape`` has one writer and one reader
        self.renderer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metrics-render")
        self.scrape: Scrape | None = None

    async def render(self, reading: Reading, jobs: JobQueue | None) -> bytes:
        """The exposition of this reading, formatted on the render thread."""
        scrape = snapshot(self.ctx, reading, jobs)  # order matters: on the loop, before the thread reads it
        return await asyncio.get_running_loop().run_in_executor(self.renderer, self.render_now, scrape)

    def render_now(self, scrape: Scrape) -> bytes:
        """On the render thread only: set, rendered and cleared before the next scrape starts."""
        self.scrape = scrape
        try:
            return generate_latest(self.registry)
        finally:
            self.scrape = None

    async def running(self, _app: web.Application) -> AsyncIterator[None]:
        """The app's cleanup context: the render thread ends with the app (after any render in
        progress, a few ms)."""
        yield
        self.renderer.shutdown(wait=True, cancel_futures=True)

    def collect(self) -> Iterator[Metric]:
        scrape = self.scrape
        if scrape is None:  # asked outside ``render_now`` (a registry's describe pass): nothing to say
            return
        reading = scrape.reading
        yield from request_families(scrape.routes, scrape.errors)
        yield from refusal_families(reading, scrape.errors)
        yield from cache_families(reading)
        yield from worker_families(reading.workers)
        yield from appliance_families(scrape.started, reading)
        if scrape.jobs is not None:
            yield from job_families(scrape.jobs)


def snapshot(ctx: Context, reading: Reading, jobs: JobQueue | None) -> Scrape:
    """Copies of what the loop mutates. ``reading`` and ``jobs`` are built fresh for this scrape
    (worker cards share only the lists of a worker's last Stats, which a new Stats replaces,
    never edits)."""
    telemetry = ctx.telemetry
    routes = [copy_counters(c) for c in list(telemetry.routes.values())]
    return Scrape(reading=reading, routes=routes, errors=dict(telemetry.errors), jobs=jobs, started=ctx.started)


def copy_counters(counters: RouteCounters) -> RouteCounters:
    copy = RouteCounters(counters.route)
    copy.responses = dict(counters.responses)
    copy.inputs = counters.inputs
    copy.duration = list(counters.duration)
    copy.duration_sum = counters.duration_sum
    copy.stages = [list(stage) for stage in counters.stages]
    copy.stage_sums = list(counters.stage_sums)
    return copy


EXPORTER = web.AppKey("exporter", Exporter)


# ---- requests ------------------------------------------------------------------------------------
def request_families(routes: list[RouteCounters], error_types: dict[str, int]) -> Iterator[Metric]:
    requests = CounterMetricFamily("appliance_requests", "HTTP answers by route template, method and status "
                                   "(499: the client left first)", labels=["route", "method", "status"])  # fmt: skip
    inputs = CounterMetricFamily("appliance_inputs", "Inputs served (texts embedded, documents scored, "
                                 "cache hits included), by route", labels=["route"])  # fmt: skip
    for counters in routes:
        for (method, status), count in sorted(counters.responses.items()):
            requests.add_metric([counters.route, method, str(status)], count)
        if counters.inputs:
            inputs.add_metric([counters.route], counters.inputs)
    yield requests
    yield inputs
    seen = [c for c in routes if c.responses]
    yield histogram_family("appliance_request_duration_seconds", "Time from the request's arrival at its "
                           "handler to its answer (a stream's last event), by route",
                           ((c.route, c.duration, c.duration_sum) for c in seen))  # fmt: skip
    helps = ("Time the request's parts waited in a worker's queue (the slowest part's)",
             "Time a worker spent tokenizing the request's inputs",
             "Time a worker spent in the model for the request's batches")  # fmt: skip
    for i, (stage, help_text) in enumerate(zip(STAGES, helps)):
        stages = [c for c in seen if sum(c.stages[i])]
        yield histogram_family(f"appliance_{stage}_seconds", f"{help_text}; requests that reached a worker, by route",
                               ((c.route, c.stages[i], c.stage_sums[i]) for c in stages))  # fmt: skip
    by_type = CounterMetricFamily("appliance_error_responses", "Error answers by their stable error type",
                                  labels=["type"])  # fmt: skip
    for kind, count in sorted(error_types.items()):
        by_type.add_metric([kind], count)
    yield by_type


def histogram_family(name: str, help_text: str, series: Iterable[tuple[str, Sequence[int], float]]) -> Metric:
    family = HistogramMetricFamily(name, help_text, labels=["route"])
    for route, counts, total in series:
        family.add_metric([route], histogram.cumulative_export(counts), total)
    return family


def refusal_families(reading: Reading, error_types: dict[str, int]) -> Iterator[Metric]:
    refused = CounterMetricFamily("appliance_admission_refusals", "Requests refused at the door, by cause: "
                                  "API key, rate, inputs over a minute's budget, memory guard, full queues",
                                  labels=["cause"])  # fmt: skip
    causes = dict(reading.admission.refused)
    for cause in ROUTER_REFUSALS:
        causes[cause] = error_types.get(cause, 0)
    for cause, count in sorted(causes.items()):
        refused.add_metric([cause], count)
    yield refused


# ---- the result cache ----------------------------------------------------------------------------
CACHE_COUNTERS = (("hits", "Inputs served from the result cache"),
                  ("misses", "Inputs looked up and not found"),
                  ("coalesced", "Misses that joined an identical computation in flight"),
                  ("bypassed", "Inputs never looked up (use_cache false, or too long)"),
                  ("evictions", "Entries evicted to stay within cache_bytes"))  # fmt: skip


def cache_families(reading: Reading) -> Iterator[Metric]:
    models = sorted(reading.cache.models.items())
    for field, help_text in CACHE_COUNTERS:
        yield per_model(CounterMetricFamily(f"appliance_cache_{field}", help_text, labels=["model"]), models, field)
    yield per_model(GaugeMetricFamily("appliance_cache_entries", "Entries in the result cache", labels=["model"]),
                    models, "entries")  # fmt: skip
    yield per_model(GaugeMetricFamily("appliance_cache_bytes", "Bytes the result cache holds", labels=["model"]),
                    models, "bytes")  # fmt: skip
    yield GaugeMetricFamily("appliance_cache_capacity_bytes", "The result cache's budget (cache_bytes; 0: off)",
                            value=reading.cache.capacity_bytes if reading.cache.enabled else 0)  # fmt: skip
    yield GaugeMetricFamily("appliance_cache_in_flight_inputs", "Inputs being computed now that others may join",
                            value=reading.cache.in_flight)  # fmt: skip


def per_model(family: GaugeMetricFamily | CounterMetricFamily, models: list[tuple[str, CacheCounts]],
              field: str) -> Metric:  # fmt: skip
    for model, counts in models:
        family.add_metric([model], getattr(counts, field))
    return family


# ---- workers -------------------------------------------------------------------------------------
WORKER_GAUGES = (("up", "1 while the worker is up and routed to", lambda w: float(w.up)),
                 ("resident_memory_bytes", "The worker process's resident memory (its last Stats)",
                  lambda w: w.rss_bytes),
                 ("gpu_memory_bytes", "CUDA memory torch has allocated on the worker's device (0 on CPU)",
                  lambda w: w.gpu_memory_bytes),
                 ("outstanding_inputs", "Inputs sent to the worker and not yet answered",
                  lambda w: w.outstanding_inputs),
                 ("outstanding_tokens", "Estimated tokens sent to the worker and not yet answered",
                  lambda w: w.outstanding_tokens),
                 ("busy_ratio", "Share of the last minute the worker spent computing", lambda w: w.busy_share),
                 ("padding_ratio", "Padded over real tokens of the worker's batches since it started "
                  "(0 before its first batch)", lambda w: w.padded_tokens / w.tokens if w.tokens else 0.0))  # fmt: skip
WORKER_COUNTERS = (("batches", "Batches the worker ran", lambda w: w.batches),
                   ("batch_inputs", "Inputs in the worker's batches", lambda w: w.items),
                   ("tokens", "Real tokens of the worker's batches", lambda w: w.tokens),
                   ("padded_tokens", "Tokens of the worker's batches as the model saw them, padding included",
                    lambda w: w.padded_tokens),
                   ("requests", "Requests the worker answered", lambda w: w.requests),
                   ("compute_seconds", "Time the worker spent in its models", lambda w: w.compute_us / 1e6),
                   ("cancelled_requests", "Requests withdrawn by the gateway before they finished",
                    lambda w: w.cancelled),
                   ("expired_requests", "Requests dropped by the worker: their deadline passed first",
                    lambda w: w.expired),
                   ("failed_batches", "Forward passes that raised", lambda w: w.failed_batches),
                   ("widened_batches", "Batches computed on idle workers' cores too, lent by the gateway",
                    lambda w: w.widened_batches),
                   ("contended_loans", "Widened batches that ran with a lent core busy",
                    lambda w: w.contended_loans),
                   ("declined_loans", "Lent batches the worker computed on its own cores, backing off after "
                    "a contended one", lambda w: w.declined_loans),
                   ("refused_requests", "Requests the worker failed whole for one input (too long, invalid)",
                    lambda w: w.refused_requests),
                   ("ring_full", "Sends the worker's request ring refused (full); each asks for a room signal",
                    lambda w: w.ring_full),
                   ("room_signals", "Room signals from the worker: it took records off a ring found full",
                    lambda w: w.room_signals))  # fmt: skip


def worker_families(workers: list[WorkerCard]) -> Iterator[Metric]:
    """Every worker slot, labelled by its index; counters are the worker's own since its start."""
    info = GaugeMetricFamily("appliance_worker_info", "A worker slot's role, device and process (always 1)",
                             labels=["worker", "role", "device", "pid"])  # fmt: skip
    state = GaugeMetricFamily("appliance_worker_state", "1 for the slot's state in the supervisor's view",
                              labels=["worker", "state"])  # fmt: skip
    restarts = CounterMetricFamily("appliance_worker_restarts", "Worker restarts by cause since the appliance "
                                   "started", labels=["worker", "cause"])  # fmt: skip
    for w in workers:
        index = str(w.index)
        info.add_metric([index, w.role, w.device, str(w.pid)], 1)
        for name in WORKER_STATES:
            state.add_metric([index, name], float(w.state == name))
        for cause in sorted({*RESTART_CAUSES, *w.restarts}):
            restarts.add_metric([index, cause], w.restarts.get(cause, 0))
    yield from (info, state, restarts)
    for name, help_text, value in WORKER_GAUGES:
        gauge = GaugeMetricFamily(f"appliance_worker_{name}", help_text, labels=["worker"])
        for w in workers:
            gauge.add_metric([str(w.index)], value(w))
        yield gauge
    for name, help_text, value in WORKER_COUNTERS:
        counter = CounterMetricFamily(f"appliance_worker_{name}", help_text, labels=["worker"])
        for w in workers:
            counter.add_metric([str(w.index)], value(w))
        yield counter
    yield batch_histogram("appliance_worker_batch_size", "Inputs per batch", workers, BATCH_SIZE_BOUNDS,
                          lambda w: (w.batch_size_counts, w.items))  # fmt: skip
    yield batch_histogram("appliance_worker_batch_tokens", "Tokens per batch as the model saw them (padded)",
                          workers, BATCH_TOKEN_BOUNDS, lambda w: (w.batch_token_counts, w.padded_tokens))  # fmt: skip


def batch_histogram(name: str, help_text: str, workers: list[WorkerCard], bounds: Sequence[int],
                    counts_of: Callable[[WorkerCard], tuple[list[int], int]]) -> Metric:  # fmt: skip
    """A worker's cumulative counts by bound (+Inf last), as its worker counts them; counts not
    of the bounds' length (none reported) are left out rather than mislabelled."""
    family = HistogramMetricFamily(name, help_text, labels=["worker"])
    for w in workers:
        counts, total = counts_of(w)
        if len(counts) == len(bounds) + 1:
            buckets = [(str(bound), float(c)) for bound, c in zip(bounds, counts)] + [("+Inf", float(counts[-1]))]
            family.add_metric([str(w.index)], buckets, float(total))
    return family


# ---- the appliance and its jobs ------------------------------------------------------------------
def appliance_families(started: float, reading: Reading) -> Iterator[Metric]:
    memory = reading.memory
    yield GaugeMetricFamily("appliance_ready", "1 while the appliance takes work", value=float(reading.ready))
    yield GaugeMetricFamily("appliance_draining", "1 while the appliance shuts down", value=float(reading.draining))
    yield GaugeMetricFamily("appliance_start_time_seconds", "When the gateway started, in unix seconds",
                            value=started)  # fmt: skip
    yield GaugeMetricFamily("appliance_uptime_seconds", "Seconds since the gateway started", value=reading.uptime_s)
    yield GaugeMetricFamily("appliance_queue_depth_inputs", "Inputs sent to workers and not yet answered, all "
                            "workers", value=sum(w.outstanding_inputs for w in reading.workers))  # fmt: skip
    yield GaugeMetricFamily("appliance_memory_total_bytes", "The machine's memory", value=memory.total_bytes)
    yield GaugeMetricFamily("appliance_memory_available_bytes", "Available memory, as the memory guard last "
                            "sampled it", value=memory.available_bytes)  # fmt: skip
    yield GaugeMetricFamily("appliance_memory_floor_bytes", "The memory guard's floor (memory_floor; 0: off)",
                            value=memory.floor_bytes)  # fmt: skip


def job_families(jobs: JobQueue) -> Iterator[Metric]:
    by_status = GaugeMetricFamily("appliance_jobs", "Jobs in the store by status", labels=["status"])
    for status, count in sorted(jobs.by_status.items()):
        by_status.add_metric([status.lower()], count)
    yield by_status
    yield GaugeMetricFamily("appliance_jobs_oldest_pending_age_seconds", "Age of the oldest unfinished job "
                            "(0: none)", value=jobs.oldest_pending_age_s or 0.0)  # fmt: skip
    yield GaugeMetricFamily("appliance_job_chunks_in_flight", "Job chunks being computed", value=jobs.chunks_in_flight)
    yield GaugeMetricFamily("appliance_job_inputs_in_flight", "Inputs of the job chunks being computed",
                            value=jobs.inputs_in_flight)  # fmt: skip
