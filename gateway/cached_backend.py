"""``CachedBackend``: the result cache and in-flight coalescing in front of the router
(``docs/architecture.md``, one request end to end): a ``Backend`` that wraps an ``UncachedBackend``.

One ``embed`` call, in steps:

1. **Key** every input: ``item_key(model, truncate, input, variant)``; the variant names the
   request options that change a vector (``key_variant``: a normalisation other than the model's,
   a cut from the left), so a vector computed one way is never served, or joined, for another.
2. **Look up** the cacheable ones (``use_cache`` and at most ``cache_max_text_chars`` long):
   hits are served here and never reach a worker.
3. **Coalesce** the misses: a key already in flight (another request's, or an earlier duplicate
   in this one) is awaited, not sent again. The rest become ONE computation (one router call,
   so the workers still batch them together) that others may join while it runs.
4. **Wait** for every needed computation up to this request's deadline, then assemble the
   vectors in input order. The computation fills the cache itself, so the result is kept even
   when the client that asked for it has gone.

Choices worth knowing:

- Uncacheable inputs (``use_cache: false``, or too long) still coalesce: joining a computation
  already in flight gives a freshly computed vector, which is all ``use_cache: false`` promises
  (no cache read, no cache write); a long text is exactly the input that is worth not computing
  twice at once.
- A shared computation that fails fails all its waiters with the same error. The one exception is
  an error about one specific input (too long with ``truncate: false``, invalid): a request whose
  inputs were not computed exactly as it sent them (some were hits, duplicates or joined) is then
  recomputed on its own, uncached, so that it gets its own error with the right input index, or
  its answer if the bad input was someone else's.
- **Priority.** A background request (a bulk job's chunk, ``priority=BACKGROUND``) reads and
  fills the cache like any other and joins any computation in flight, interactive or background.
  An interactive request joins only interactive computations: joining a background one would make
  it wait at background priority, behind all the interactive work that keeps that chunk waiting
  (up to the chunk's deadline under load). It computes its own copy instead; the duplicate costs a
  few items of work. The two kinds are kept apart in two ``InFlight`` tables.
- **Isolating calls** (``isolate``, ``gateway/items.py``): the computation answers per item, and
  an input it refused is a ``Refused`` row: never cached, never served as a vector, and given to
  each waiter as that input's error, its message naming the waiter's own index. A waiter that
  did not ask to isolate raises it, which recomputes that request on its own as above; one that
  did and joined a computation that failed whole for an input does the same, isolating.
- Rerank is passed through untouched (with its priority and options).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any, Awaitable, Iterable, Sequence, TypeVar

import numpy as np

from appliance.config import Config
from appliance.protocol import INTERACTIVE, Input, TruncationDirection, can_embed
from gateway import errors
from gateway.backend import (
    CacheCounts,
    CacheReport,
    EmbedOutcome,
    ModelCard,
    RerankOutcome,
    Timings,
    UncachedBackend,
    WorkerCard,
    enforces_deadline,
    isolate_option,
)
from gateway.items import renamed_message
from gateway.result_cache import Entry, ModelCounters, ResultCache, item_key, key_variant
from gateway.coalesce import InFlight, settle

C = TypeVar("C", bound=CacheCounts)

# Errors that are about one input of the computation, not about the computation itself.
INPUT_ERRORS = (errors.InputTooLong, errors.InvalidField)


@dataclass(slots=True)
class Row:
    """One computed input: the full vector, its token count, and the computation's provenance.
    A cache hit is represented by the cache's ``Entry`` itself (same ``vector`` and ``tokens``),
    so a hit allocates nothing."""

    vector: bytes  # float32; the very object the cache stores, so a fill copies nothing
    tokens: int
    workers: str
    timings: Timings


@dataclass(slots=True)
class Refused:
    """One input an isolating computation refused: its error, never cached."""

    error: errors.ApiError


@dataclass(frozen=True, slots=True)
class Options:
    """How one embed request wants its vectors computed (all but ``priority`` are in its keys)."""

    truncate: bool
    priority: int
    normalize: bool | None
    direction: TruncationDirection
    isolate: bool = False  # refused inputs become ``Refused`` rows instead of failing the call


@dataclass(slots=True)
class Plan:
    """What one request still needs after the cache lookup."""

    inputs: Sequence[Input]
    keys: list[bytes]  # per input
    rows: list[Row | Entry | None]  # per input: the hit, or None until computed (or refused)
    hits: int
    lead: dict[bytes, Input]  # keys this request computes itself, in first-seen order
    joined: dict[bytes, asyncio.Future[Row | Refused]]  # keys already in flight elsewhere
    refused: dict[int, errors.ApiError] | None = None  # an isolating request's refused inputs


class CachedBackend:
    def __init__(self, config: Config, inner: UncachedBackend) -> None:
        self.config = config
        self.inner = inner
        self.cache = ResultCache(config.cache_bytes)
        self.inflight: InFlight[bytes, Row | Refused] = InFlight()  # interactive computations: anyone may join
        self.background_inflight: InFlight[bytes, Row | Refused] = InFlight()  # only background requests join
        # the router ends every call by its deadline, so its waiters need no timers: nor do ours
        self.enforces_deadline = enforces_deadline(inner)

    # ---- Backend: state, passed through ------------------------------------------------
    def is_ready(self) -> bool:
        return self.inner.is_ready()

    def is_draining(self) -> bool:
        return self.inner.is_draining()

    def models(self) -> list[ModelCard]:
        return self.inner.models()

    def workers(self) -> list[WorkerCard]:
        return self.inner.workers()

    async def rerank(self, model: str, query: str, documents: Sequence[str], *, truncate: bool,
                     deadline: float, priority: int = INTERACTIVE, raw_scores: bool = False,
                     truncation_direction: TruncationDirection = "right", isolate: bool = False) -> RerankOutcome:  # fmt: skip
        return await self.inner.rerank(model, query, documents, truncate=truncate, deadline=deadline,
                                       priority=priority, raw_scores=raw_scores,
                                       truncation_direction=truncation_direction,
                                       **isolate_option(isolate))  # fmt: skip

    def variant(self, model: str, truncate: bool, normalize: bool | None, direction: TruncationDirection) -> bytes:
        """The key variant of a request's options (``key_variant``), against the model's default."""
        if normalize is None and direction == "right":
            return b""  # the common case: no card lookup
        return key_variant(normalize=normalize, model_normalizes=self.model_normalizes(model), truncate=truncate,
                           direction=direction)  # fmt: skip

    def model_normalizes(self, model: str) -> bool | None:
        """The model's default normalisation, None until a worker holding it has reported it."""
        card = next((c for c in self.inner.models() if c.name == model), None)
        if card is None or (card.dim == 0 and can_embed(card.kind)):  # no worker has described it yet
            return None
        return card.normalize

    # ---- Backend: embed ----------------------------------------------------------------
    def lookup(self, model: str, inputs: Sequence[Input], *, truncate: bool, use_cache: bool = True,
               json: bool = False, normalize: bool | None = None,
               truncation_direction: TruncationDirection = "right") -> EmbedOutcome | None:  # fmt: skip
        """Every input a hit: the outcome now, with no task, timer or await (a pure-hit request
        costs what HTTP costs). The first miss returns None having counted and moved nothing."""
        if not (use_cache and self.cache.enabled):
            return None
        limit, peek = self.config.cache_max_text_chars, self.cache.peek
        variant = self.variant(model, truncate, normalize, truncation_direction)
        keys, entries = [], []
        for item in inputs:
            key = item_key(model, truncate, item, variant)
            entry = peek(key) if len(item) <= limit else None
            if entry is None:
                return None
            keys.append(key)
            entries.append(entry)
        for key in keys:
            self.cache.hit(key, model)
        vectors = np.frombuffer(b"".join([e.vector for e in entries]), dtype=np.float32).reshape(len(entries), -1)
        return EmbedOutcome(vectors=vectors, tokens=[e.tokens for e in entries], cache_hits=len(entries),
                            json_rows=[self.cache.json_of(e) for e in entries] if json else None)  # fmt: skip

    async def embed(self, model: str, inputs: Sequence[Input], *, truncate: bool, deadline: float,
                    use_cache: bool = True, priority: int = INTERACTIVE, normalize: bool | None = None,
                    truncation_direction: TruncationDirection = "right", isolate: bool = False) -> EmbedOutcome:  # fmt: skip
        options = Options(truncate, priority, normalize, truncation_direction, isolate)
        plan = self.plan(model, inputs, options, use_cache)
        if plan.lead or plan.joined:
            try:
                await self.complete(model, plan, options, deadline, use_cache)
            except INPUT_ERRORS:
                if len(plan.lead) == len(inputs):
                    raise  # computed exactly as sent: the error and its input index are this request's
                return await self.inner_embed(model, inputs, options, deadline)
        return assemble(plan.rows, plan.hits, plan.refused)

    def inner_embed(self, model: str, inputs: Sequence[Input], options: Options,
                    deadline: float) -> Awaitable[EmbedOutcome]:  # fmt: skip
        # not a coroutine of its own: one frame fewer on every computation
        return self.inner.embed(model, inputs, truncate=options.truncate, deadline=deadline,
                                      priority=options.priority, normalize=options.normalize,
                                      truncation_direction=options.direction,
                                      **isolate_option(options.isolate))  # fmt: skip

    def plan(self, model: str, inputs: Sequence[Input], options: Options, use_cache: bool) -> Plan:
        """Steps 1 to 3: key every input, serve the hits, sort each miss into "join" or "lead".
        The hot loop of a cache hit: kept free of allocations and attribute chains."""
        truncate, priority = options.truncate, options.priority
        variant = self.variant(model, truncate, options.normalize, options.direction)
        keys = [item_key(model, truncate, item, variant) for item in inputs]
        plan = Plan(inputs, keys, [None] * len(inputs), 0, {}, {})
        lookup = use_cache and self.cache.enabled
        limit, get = self.config.cache_max_text_chars, self.cache.get
        for i, (item, key) in enumerate(zip(inputs, keys)):
            if lookup and len(item) <= limit:
                entry = get(key, model)
                if entry is not None:
                    plan.rows[i] = entry
                    plan.hits += 1
                    continue
            else:
                self.cache.counters(model).bypassed += 1
            self.route_miss(model, key, item, plan, priority)
        return plan

    def route_miss(self, model: str, key: bytes, item: Input, plan: Plan, priority: int) -> None:
        if key in plan.lead or key in plan.joined:
            self.inflight.coalesced[model] += 1  # a duplicate inside this request
            return
        future = self.inflight.joining(key, model)
        if future is None and priority != INTERACTIVE:  # background work joins either kind
            future = self.background_inflight.joining(key, model)
        if future is not None:
            plan.joined[key] = future
        else:
            plan.lead[key] = item

    async def complete(self, model: str, plan: Plan, options: Options, deadline: float, use_cache: bool) -> None:
        """Step 4: launch this request's own computation, wait for it and for the joined ones
        (this request's deadline), and fill in the rows."""
        futures = dict(plan.joined)
        if plan.lead:
            lead_keys, items = list(plan.lead), list(plan.lead.values())
            store = [use_cache and self.cacheable(item) for item in items]
            flights = self.inflight if options.priority == INTERACTIVE else self.background_inflight
            launched = flights.launch(
                lead_keys, lambda: self.compute(model, items, lead_keys, store, options, deadline),
                deadline if self.enforces_deadline else math.inf)  # fmt: skip
            futures.update(zip(lead_keys, launched))
        if not await settle(list(futures.values()), deadline):
            raise errors.DeadlineExceeded(
                f"request not finished within its deadline ({self.config.request_timeout:g}s)")
        for i, key in enumerate(plan.keys):
            if plan.rows[i] is None:
                row = futures[key].result()  # raises the shared error, if any
                if isinstance(row, Refused):
                    refuse(plan, i, row, options.isolate)
                else:
                    plan.rows[i] = row
        if use_cache and plan.joined:
            self.keep_joined(model, plan)

    async def compute(self, model: str, items: list[Input], keys: list[bytes], store: list[bool],
                      options: Options, deadline: float) -> list[Row | Refused]:  # fmt: skip
        """The shared computation (runs in its own task): one router call, then the cache fill
        (of the computed rows only: a refused input has no vector, and the rows after it must
        not slide onto its key)."""
        outcome = await self.inner_embed(model, items, options, deadline)
        vectors = np.ascontiguousarray(outcome.vectors, dtype=np.float32)
        rows = computed_rows(outcome, vectors, len(items))
        for key, row, keep in zip(keys, rows, store):
            if keep and isinstance(row, Row):
                self.cache.put(key, model, row.vector, row.tokens)
        return rows

    def keep_joined(self, model: str, plan: Plan) -> None:
        """A joined computation may have been launched with ``use_cache: false``; this request
        wants its results kept, so keep them (nothing to do for what is already cached)."""
        for item, key in zip(plan.inputs, plan.keys):
            if key in plan.joined and key not in self.cache and self.cacheable(item):
                row = plan.joined[key].result()
                if isinstance(row, Row):
                    self.cache.put(key, model, row.vector, row.tokens)

    def cacheable(self, item: Input) -> bool:
        return self.cache.enabled and len(item) <= self.config.cache_max_text_chars

    # ---- preloading ----------------------------------------------------------------------
    async def warm(self, model: str, texts: list[str], *, deadline: float) -> int:
        """Compute ``texts`` (truncated, as the routes' default) and cache them without evicting
        anything and without counting hits or misses; how many were stored."""
        outcome = await self.inner.embed(model, texts, truncate=True, deadline=deadline)
        vectors = np.ascontiguousarray(outcome.vectors, dtype=np.float32)
        stored = 0
        for text, vector, tokens in zip(texts, vectors, outcome.tokens):
            if not self.cache.put(item_key(model, True, text), model, vector.tobytes(), tokens, evict=False):
                break
            stored += 1
        return stored

    # ---- visibility ------------------------------------------------------------------------
    def cache_stats(self) -> CacheReport:
        coalesced = self.inflight.coalesced + self.background_inflight.coalesced
        names = sorted(set(self.cache.all_counters()) | set(coalesced))
        models = {name: counts(self.cache.counters(name), coalesced[name]) for name in names}
        total = sum_counters(self.cache.all_counters().values())
        in_flight = len(self.inflight) + len(self.background_inflight)
        return counts(total, sum(coalesced.values()), CacheReport, enabled=self.cache.enabled,
                      capacity_bytes=self.cache.capacity, in_flight=in_flight, models=models)  # fmt: skip


def counts(c: ModelCounters, coalesced: int, kind: type[C] = CacheCounts,  # type: ignore[assignment]
           **extra: Any) -> C:  # fmt: skip
    """The counters as ``kind`` (``CacheCounts``, or the ``CacheReport`` that extends it)."""
    looked_up = c.hits + c.misses
    return kind(hits=c.hits, misses=c.misses, coalesced=coalesced, bypassed=c.bypassed,
                evictions=c.evictions, entries=c.entries, bytes=c.bytes,
                hit_rate=c.hits / looked_up if looked_up else 0.0, **extra)  # fmt: skip


def sum_counters(all_counters: Iterable[ModelCounters]) -> ModelCounters:
    total = ModelCounters()
    for c in all_counters:
        total.hits += c.hits
        total.misses += c.misses
        total.bypassed += c.bypassed
        total.evictions += c.evictions
        total.entries += c.entries
        total.bytes += c.bytes
    return total


def computed_rows(outcome: EmbedOutcome, vectors: np.ndarray, count: int) -> list[Row | Refused]:
    """One row per input of a computation of ``count``: its vector, or its refusal. The
    outcome's rows skip the refused inputs, so each input takes the next row only if it has one."""
    if not outcome.refused:  # the common case: row j is input j
        return [Row(vectors[j].tobytes(), outcome.tokens[j], outcome.workers, outcome.timings) for j in range(count)]
    rows: list[Row | Refused] = []
    served = 0
    for j in range(count):
        if j in outcome.refused:
            rows.append(Refused(outcome.refused[j]))
            continue
        rows.append(Row(vectors[served].tobytes(), outcome.tokens[served], outcome.workers, outcome.timings))
        served += 1
    return rows


def refuse(plan: Plan, index: int, refused: Refused, isolate: bool) -> None:
    """Input ``index`` of the request was refused by the computation it awaited: kept as its
    error when the request isolates, else raised (the whole request fails on it)."""
    error = type(refused.error)(renamed_message(refused.error, index))
    if not isolate:
        raise error
    if plan.refused is None:
        plan.refused = {}
    plan.refused[index] = error


def assemble(rows: Sequence[Row | Entry | None], hits: int,
             refused: dict[int, errors.ApiError] | None = None) -> EmbedOutcome:  # fmt: skip
    """The rows, all present by now but the refused, as one outcome in input order: ONE join of
    the float32 bytes and one (read-only) array over them."""
    done = [row for row in rows if row is not None]
    assert len(done) + len(refused or ()) == len(rows), "every input has a row once its computations are settled"
    if not done:  # every input refused
        return EmbedOutcome(vectors=np.zeros((0, 0), dtype=np.float32), tokens=[], refused=refused or {})
    vectors = np.frombuffer(b"".join([row.vector for row in done]), dtype=np.float32).reshape(len(done), -1)
    workers, timings = provenance([row for row in done if isinstance(row, Row)])
    return EmbedOutcome(vectors=vectors, tokens=[row.tokens for row in done], workers=workers, timings=timings,
                        cache_hits=hits, refused=refused or {})  # fmt: skip


def provenance(computed: list[Row]) -> tuple[str, Timings]:
    """The workers that computed the rows ("0,1") and the slowest computation's stage timings.
    Rows of one computation share its ``Timings`` object (and its already sorted workers)."""
    if not computed:
        return "", Timings()
    first = computed[0].timings
    if all(row.timings is first for row in computed):  # the common case: one computation
        return computed[0].workers, first
    distinct = {id(row.timings): row for row in computed}.values()
    served = sorted({w for row in distinct for w in row.workers.split(",") if w}, key=int)
    return ",".join(served), slowest([row.timings for row in distinct])


def slowest(timings: list[Timings]) -> Timings:
    """The stage timings of the slowest computation a request waited for (zeros for all-hits)."""
    if not timings:
        return Timings()
    return Timings(queue_us=max(t.queue_us for t in timings), tokenize_us=max(t.tokenize_us for t in timings),
                   compute_us=max(t.compute_us for t in timings))  # fmt: skip
