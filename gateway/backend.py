"""What the HTTP routes need from the rest of the gateway, as one small interface.

Routes parse and validate, call a ``Backend``, and encode. The real backend is the router over the
workers' shared-memory channels (``gateway/router.py``); the cache and in-flight coalescing wrap it.
Keeping routes behind this seam means the HTTP contract can be tested on its own and the serving
path can change without touching a route.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import msgspec
import numpy as np

from appliance.protocol import INTERACTIVE, Input, ModelKind, TruncationDirection, WorkerCounters
from gateway.errors import ApiError


class Timings(msgspec.Struct, gc=False):
    """Where the time went, in microseconds, for the ``Server-Timing`` header."""

    queue_us: int = 0
    tokenize_us: int = 0
    compute_us: int = 0


class EmbedOutcome(msgspec.Struct, gc=False):
    vectors: np.ndarray  # (n, dim) float32, in input order, normalised as the request (else the model) says
    tokens: list[int]  # tokens per input (after truncation), for `usage`
    workers: str = ""  # worker ids that served it, "0" or "0,1"; "" when all were cache hits
    timings: Timings = msgspec.field(default_factory=Timings)
    cache_hits: int = 0  # how many of the inputs were served from the result cache
    # each full-width vector already as JSON: set by ``Backend.lookup`` (every input a hit) when
    # asked for, so a JSON route splices them instead of formatting floats
    json_rows: list[bytes] | None = None
    # an isolating call's inputs not served, by their place in the call, each with its own error
    # (its message ends "(input N)"); ``vectors`` and ``tokens`` skip them (``gateway/items.py``)
    refused: dict[int, ApiError] = {}


class RerankOutcome(msgspec.Struct, gc=False):
    scores: np.ndarray  # (n,) float32 in document order; higher = more relevant
    tokens: list[int]
    workers: str = ""
    timings: Timings = msgspec.field(default_factory=Timings)
    refused: dict[int, ApiError] = {}  # as EmbedOutcome.refused, by document; ``scores`` skips them


class ModelCard(msgspec.Struct):
    name: str
    kind: ModelKind
    dim: int  # 0 for a cross-encoder
    max_length: int
    main: bool
    workers: list[int]  # ids of the workers that hold it (and are up)
    normalize: bool = False  # its vectors are L2-normalised when a request does not say
    prompts: dict[str, str] = msgspec.field(default_factory=dict)  # name -> text put before an input
    default_prompt_name: str = ""  # the prompt used when a request names none; "" = none
    dtype: str = ""  # the weights' dtype as the workers loaded them ("float32", "bfloat16"); "" before any did


class WorkerCard(WorkerCounters, kw_only=True):
    """One worker slot as /stats shows it; the counters are the worker's own (its last Stats)."""

    index: int
    up: bool
    models: list[str]
    outstanding_inputs: int
    outstanding_tokens: int
    ring_full: int = 0  # sends its request ring refused (full); the part waited, then perhaps 429
    room_signals: int = 0  # times it said it took records off that full ring (the senders retried)
    pid: int = 0
    role: str = ""  # "primary" | "light"
    device: str = ""  # "cuda:0", "cpu" (with its cores in ``cores``)
    cores: list[int] = msgspec.field(default_factory=list)  # the CPU cores it is pinned to
    state: str = ""  # the supervisor's view: stopped | starting | ready | draining | failed
    # respawns of this slot by why the predecessor went (appliance.protocol.RestartCause: crash,
    # heartbeat, recycle, boot_failure), over the appliance's life; causes never seen are absent
    restarts: dict[str, int] = msgspec.field(default_factory=dict)
    busy_share: float = 0.0  # share of the last minute its model was computing (0..1; gateway/busy.py)


class CacheCounts(msgspec.Struct, kw_only=True):
    """Result-cache counters, for one model or summed over all. ``hit_rate`` = hits / (hits +
    misses); coalesced inputs are misses that waited for an identical computation in flight
    instead of sending their own; bypassed inputs were never looked up (``use_cache: false``, or
    longer than ``cache_max_text_chars``)."""

    hits: int = 0
    misses: int = 0
    coalesced: int = 0
    bypassed: int = 0
    evictions: int = 0
    entries: int = 0
    bytes: int = 0
    hit_rate: float = 0.0


class CacheReport(CacheCounts, kw_only=True):
    """``GET /cache-stats``: the totals, the budget, and the same counters per model."""

    enabled: bool = False
    capacity_bytes: int = 0
    in_flight: int = 0  # inputs being computed right now that others may join
    models: dict[str, CacheCounts] = msgspec.field(default_factory=dict)


class UncachedBackend(Protocol):
    """What computes: the router. ``gateway.cached_backend.CachedBackend`` wraps one into a ``Backend``.
    Raises ``gateway.errors.ApiError`` subclasses: ModelNotFound, InputTooLong, QueueFull,
    WorkerLost, DeadlineExceeded, NotReady, Draining, Unsupported. A backend whose every call is
    known to end by its deadline says so with a class attribute ``enforces_deadline = True``
    (``enforces_deadline``): its callers then set no timers of their own around it."""

    def is_ready(self) -> bool: ...

    def is_draining(self) -> bool: ...

    def models(self) -> list[ModelCard]: ...

    def workers(self) -> list[WorkerCard]: ...

    async def embed(
        self, model: str, inputs: Sequence[Input], *, truncate: bool, deadline: float, use_cache: bool = True,
        priority: int = INTERACTIVE, normalize: bool | None = None, truncation_direction: TruncationDirection = "right",
        isolate: bool = False,
    ) -> EmbedOutcome:
        """``deadline`` is an absolute ``loop.time()``; past it the call raises DeadlineExceeded.
        ``use_cache=False`` bypasses the result cache (the batch route's per-request switch).
        ``priority=BACKGROUND`` (``appliance.protocol``; bulk jobs) runs below interactive work
        and waits for room instead of getting 429 (``gateway/router.py``). ``normalize``: L2-normalise
        the vectors (None: as the model does by default); ``truncation_direction``: the side a
        too-long input loses with ``truncate``. ``isolate``: an input refused on its own (too
        long with ``truncate`` false, an invalid token id) goes to ``EmbedOutcome.refused`` and the
        others are served, instead of the whole call raising its error (pass it with
        ``isolate_option``)."""
        ...

    async def rerank(
        self, model: str, query: str, documents: Sequence[str], *, truncate: bool, deadline: float,
        priority: int = INTERACTIVE, raw_scores: bool = False, truncation_direction: TruncationDirection = "right",
        isolate: bool = False,
    ) -> RerankOutcome:
        """Cross-encoder scores for a cross_encoder model (its raw logits with ``raw_scores``, else
        their sigmoid), else query/document cosine (``raw_scores`` changes nothing there);
        ``priority``, ``truncation_direction`` and ``isolate`` (its documents; a refused query
        still raises) as for ``embed``."""
        ...


def isolate_option(isolate: bool) -> dict[str, bool]:
    """``embed``'s ``isolate=True`` as keywords, or none when False: a backend written before the
    option (a test double, a wrapper) is then called exactly as it always was, and answers an
    input error by raising it, which ``gateway/items.py`` still handles."""
    return {"isolate": True} if isolate else {}


def enforces_deadline(backend: object) -> bool:
    """Whether ``backend`` promises that its calls end (DeadlineExceeded at worst) by their
    ``deadline``. Test doubles and anything else that does not say so get a caller's backstop."""
    return getattr(backend, "enforces_deadline", False) is True


class Backend(UncachedBackend, Protocol):
    """What the routes call: an ``UncachedBackend`` plus the result cache's counters."""

    def lookup(self, model: str, inputs: Sequence[Input], *, truncate: bool, use_cache: bool = True,
               json: bool = False, normalize: bool | None = None,
               truncation_direction: TruncationDirection = "right") -> EmbedOutcome | None:  # fmt: skip
        """The pure-hit fast path, synchronous: the outcome when EVERY input is in the result
        cache (with ``json_rows`` when ``json``), else None having counted nothing, and the
        caller goes on to ``embed`` (with the same ``normalize`` and ``truncation_direction``)."""
        ...

    def cache_stats(self) -> CacheReport:
        """For ``GET /cache-stats`` and ``GET /stats`` (``enabled=False`` when there is no cache)."""
        ...
