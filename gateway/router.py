"""Routes work to workers and turns their results back into answers: the real ``Backend``.

- Main-model work goes to the up worker with the least outstanding *tokens* (estimated from
  text length: the gateway does not tokenize); other models go to the workers that hold them
  (the primary). A large request is cut into parts spread over the workers that hold its model.
- Every part is one work record on a worker's request ring and one future here. Outstanding
  inputs per worker are bounded (``max_pending_inputs``): over it, 429 with Retry-After.
  A full ring waits briefly for the worker to catch up, then 429: never drop, never overwrite.
  The wait ends when the worker takes records off that ring: it rings its room signal
  (``appliance/ipc/channel.py``, delivered as ``Room``), so nobody polls for ring space.
- A request for a model with no holder up (its only holder respawning) parks until a holder's
  ``Ready`` wakes it, up to its deadline (``gateway/holders.py``).
- Deadlines: one sweep (``expire``, every ``SWEEP_S`` while any part is out) fails each sent or
  parked part past its request's deadline with 504, and its request withdraws it (``Cancel``);
  every other wait here is bounded by the deadline itself. So a call ends by its deadline (plus
  at most a tick) with no timer per request, and callers need none (``enforces_deadline``).
- A worker that dies loses nothing silently: each of its parts is resent once to another worker
  that holds the model; when none is up, it is parked and sent to the first holder that comes
  back (its deadline still bounds it). A part lost twice fails with 503: it may be what kills
  workers.
- A request's only part, interactive, sent to an idle CPU worker while every other worker is
  idle too, carries the other CPU workers' cores for its forward pass (``gateway/lending.py``;
  ``lend_idle_cores``).

Priority (``priority=BACKGROUND``: bulk-job chunks; the worker's batcher runs them in the room
interactive batches leave, ``workers/batcher.py``). Background parts must not crowd the workers:

- At most ONE background part is in flight per worker (``WorkerState.background``). The others
  wait here, on the event loop, for a worker's slot to free (woken by results), not in a worker's
  ring or batcher: an interactive part never queues behind more than one background part.
- Background parts never take ``max_pending_inputs`` room from interactive work: an interactive
  part is refused (429) only over the limit in *interactive* inputs, and is routed by interactive
  load; a background part goes only where all outstanding inputs plus its own stay within the
  limit (or the worker is idle), and otherwise waits; on a full ring it waits too. It never gets
  429; its deadline bounds every wait (504).
- A lost background part is resent once, like any part, but only to a holder whose slot is free;
  else it is parked until a slot frees or a holder comes back.

Worker cards (``workers``, for ``GET /stats``) join three sources per slot: the worker's own
counters (its latest ``Stats``, only while its pid is the one that said ``Ready``), what the
supervisor last said of the slot (``worker_status``: role, device, cores, state, respawns by
cause) and the busy share of the last minute (``gateway/busy.py``, fed by every ``Stats``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol, Sequence, TypeVar

import msgspec

from appliance.config import Config
from appliance.protocol import (
    INTERACTIVE,
    Cancel,
    Embed,
    Failed,
    Input,
    ModelInfo,
    Ready,
    Request,
    Rerank,
    Room,
    Scores,
    SlotStatus,
    Stats,
    TruncationDirection,
    Vectors,
    WorkerCounters,
)
from gateway import errors
from gateway.backend import EmbedOutcome, ModelCard, RerankOutcome, Timings, WorkerCard
from gateway.busy import BusyWindow
from gateway.holders import HolderWait
from gateway.lending import spare_cores
from gateway.parts import Part, cut, estimate_tokens, merge_vectors, record_budget, served_by
from gateway.priority import free_slots, least_loaded, place

log = logging.getLogger("appliance.router")

FULL_RING_WAIT_S = 1.0  # how long a part may wait for space in a full ring before 429
# How often the deadline sweep looks at the parts in flight: timeouts are seconds, so a part is
# failed at most this late, and one timer serves every request instead of one timer each.
SWEEP_S = 0.02
RETRY_AFTER_S = errors.RETRY_AFTER_S


M = TypeVar("M")


class Link(Protocol):
    """What the router uses of ``appliance.link.WorkerLink``."""

    workers: int

    def encode(self, message: Request) -> bytes: ...
    def send_record(self, worker: int, record: bytes) -> bool: ...
    def subscribe(self, kind: type[M], handler: Callable[[int, M], None]) -> None: ...


@dataclass(slots=True)
class WorkerState:
    index: int
    up: bool = False
    models: dict[str, ModelInfo] = field(default_factory=dict)
    outstanding_tokens: int = 0
    outstanding_inputs: int = 0
    parts: dict[int, Part] = field(default_factory=dict)
    stats: Stats | None = None
    pid: int = 0  # from its Ready; its Stats (every second) may not have come yet
    device: str = "cpu"  # from its Ready: "cpu" or "cuda:<gpu>"
    cores: list[int] = field(default_factory=list)  # from its Ready: the cores it is pinned to
    idle_since: float = 0.0  # time.monotonic() when its last part left it or it came up (lending)
    background: Part | None = None  # its one background part in flight, if any
    lent: Part | None = None  # the part computing on its cores too, in flight elsewhere (lending)
    ring_full: int = 0  # sends its request ring refused (full)
    room_signals: int = 0  # its room signals: it took records off that ring after a refusal
    status: SlotStatus | None = None  # the supervisor's view of the slot (``worker_status``)
    busy: BusyWindow = field(default_factory=BusyWindow)  # compute share of the last minute


class Router:
    # every wait in ``embed`` and ``rerank`` is bounded by the deadline, and the sweep fails a sent
    # part past it: callers need no timers of their own (``gateway/backend.py``)
    enforces_deadline = True

    def __init__(self, config: Config, link: Link) -> None:
        """Hears its workers' results and counters through ``link``; the supervisor tells it
        (``WorkerEvents``) when a worker comes, goes or is lost."""
        self.config = config
        self.link = link
        self.workers_state = [WorkerState(i) for i in range(link.workers)]
        for kind in (Vectors, Scores, Failed):
            link.subscribe(kind, self.worker_result)
        link.subscribe(Stats, self.worker_stats)
        link.subscribe(Room, self.worker_room)
        self.ids = itertools.count(1)
        self.draining = False
        self.main = config.main_model().name
        self.configured = {m.name: m for m in config.models}
        # resolved (and replaced) by the next ``wake_senders``; made by the first sender to wait
        self.change: asyncio.Future[None] | None = None
        self.completed_parts = 0
        self.withdrawn = 0  # parts cancelled on their worker before an answer came
        self.booted = False  # every model has been up at once
        self.parked: dict[int, Part] = {}  # parts of a dead worker, waiting for a holder to come back
        self.known: dict[str, ModelInfo] = {}  # last card of each model, for while no holder is up
        self.cards: list[ModelCard] | None = None  # models(), until a worker comes or goes
        self.record_budget = record_budget(config.ring_bytes)
        self.holder_wait = HolderWait(config.max_parked_requests)  # requests parked for a holder
        self.sweep: asyncio.TimerHandle | None = None  # the deadline sweep, armed while parts are out

    # ---- Backend: state ------------------------------------------------------------------
    def is_ready(self) -> bool:
        """Every model served, or (after the first time) being respawned: a request for a model
        whose worker is coming back waits for it (``holders``) instead of being refused."""
        return self.booted and not self.draining

    def is_draining(self) -> bool:
        return self.draining

    def models(self) -> list[ModelCard]:
        """Every request resolves its model here, so the cards are built once per change of the
        workers (``worker_ready``, ``worker_unavailable``, ``worker_lost``); callers only read them."""
        if self.cards is None:
            self.cards = self.build_cards()
        return self.cards

    def build_cards(self) -> list[ModelCard]:
        cards: list[ModelCard] = []
        for name, model in self.configured.items():
            holders = [w for w in self.workers_state if w.up and name in w.models]
            info = holders[0].models[name] if holders else self.known.get(name)  # a respawn keeps its card
            cards.append(ModelCard(name=name, kind=model.kind, dim=info.dim if info else 0,
                                   max_length=info.max_length if info else 0, main=model.main,
                                   workers=[w.index for w in holders], normalize=info.normalize if info else False,
                                   prompts=dict(info.prompts) if info else {},
                                   default_prompt_name=info.default_prompt_name if info else "",
                                   dtype=info.dtype if info else ""))  # fmt: skip
        return cards

    def workers(self) -> list[WorkerCard]:
        return [worker_card(w) for w in self.workers_state]

    def outstanding(self) -> int:
        return sum(len(w.parts) for w in self.workers_state)

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no part is in flight (shutdown drain); False on timeout."""
        deadline = time.monotonic() + timeout
        while self.outstanding() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return not self.outstanding()

    # ---- Backend: work -------------------------------------------------------------------
    async def embed(self, model: str, inputs: Sequence[Input], *, truncate: bool, deadline: float,
                    use_cache: bool = True, priority: int = INTERACTIVE, normalize: bool | None = None,
                    truncation_direction: TruncationDirection = "right", isolate: bool = False) -> EmbedOutcome:  # fmt: skip
        del use_cache  # the router computes everything it is given; the cache wraps it
        holders = self.holders_now(model) or await self.holder_wait.wait(model, deadline, priority > INTERACTIVE,
                                                                         self.up_holders)  # fmt: skip
        dim = holders[0].models[model].dim
        slices = cut(inputs, answer_bytes=max(dim, 1) * 4, budget=self.record_budget, ways=len(holders))
        expires = monotonic_deadline(deadline)
        parts = [self.part(model, Embed(0, model, list(inputs[a:b]), truncate, expires, priority, normalize,
                                        truncation_direction, isolate=isolate), b - a,
                           sum(map(estimate_tokens, inputs[a:b])), a, deadline) for a, b in slices]  # fmt: skip
        results = await self.run_parts(parts, deadline)
        outcome = merge_vectors(parts, results)
        outcome.workers = served_by(parts)
        return outcome

    async def rerank(self, model: str, query: str, documents: Sequence[str], *, truncate: bool,
                     deadline: float, priority: int = INTERACTIVE, raw_scores: bool = False,
                     truncation_direction: TruncationDirection = "right", isolate: bool = False) -> RerankOutcome:  # fmt: skip
        await self.holders(model, deadline, background=priority > INTERACTIVE)
        tokens = estimate_tokens(query) * len(documents) + sum(map(estimate_tokens, documents))
        message = Rerank(0, model, query, list(documents), truncate, monotonic_deadline(deadline), priority,
                         truncation_direction, raw_scores, isolate=isolate)  # fmt: skip
        part = self.part(model, message, len(documents) + 1, tokens, 0, deadline)
        (result,) = await self.run_parts([part], deadline)
        assert isinstance(result, Scores)
        timings = Timings(result.queue_us, result.tokenize_us, result.compute_us)
        # usage counts the query once for a bi-encoder (it was embedded once), per pair for a cross-encoder
        tokens = list(result.tokens) + ([result.query_tokens] if result.query_tokens else [])
        return RerankOutcome(result.array().copy(), tokens, served_by([part]), timings, part.refused(result))

    async def holders(self, model: str, deadline: float, *, background: bool = False) -> list[WorkerState]:
        """The up workers holding ``model``. When none is up (a recycle or a crash of the only
        holder), wait for one to come back rather than fail at once: a respawn takes seconds."""
        return self.holders_now(model) or await self.holder_wait.wait(model, deadline, background, self.up_holders)

    def holders_now(self, model: str) -> list[WorkerState]:
        """The up workers holding ``model``, perhaps none; 404 for a model not served, 503 while
        draining. Synchronous: a request whose holders are up awaits nothing here."""
        if model not in self.configured:
            raise errors.ModelNotFound(f"model {model!r} is not served here")
        if self.draining:
            raise errors.Draining("the appliance is shutting down", retry_after=RETRY_AFTER_S)
        return self.up_holders(model)

    def up_holders(self, model: str) -> list[WorkerState]:
        return [w for w in self.workers_state if w.up and model in w.models]

    async def wait_for_change(self, until: float) -> bool:
        """Wait for a result, a worker coming up or going, or room in a request ring (``Room``),
        at most until ``until``; False once past it. No poll: every change that can let a part
        go calls ``wake_senders``. The caller's failed send and this registration run with no
        await between them, so no wake can fall between the two; a room signal the worker's and
        the gateway's stores race past is caught by the channel's rescue timer (2 ms)."""
        loop = asyncio.get_running_loop()
        remaining = until - loop.time()
        if remaining <= 0:
            return False
        change = self.change
        if change is None:
            change = self.change = loop.create_future()
        # asyncio.wait, not wait_for: a timeout must not cancel the future the other senders share
        await asyncio.wait((change,), timeout=remaining)
        return True

    def part(self, model: str, message: Embed | Rerank, inputs: int, tokens: int, offset: int,
             deadline: float) -> Part:  # fmt: skip
        message.id = next(self.ids)
        future: asyncio.Future[Vectors | Scores] = asyncio.get_running_loop().create_future()
        return Part(message.id, model, message, inputs, tokens, offset, future, deadline)

    async def run_parts(self, parts: list[Part], deadline: float) -> list[Vectors | Scores]:
        """Send the parts and wait for their answers. No timer of its own: every wait in
        ``dispatch`` is bounded by ``deadline``, and a sent part past it is failed by the sweep."""
        try:
            for part in parts:
                record = self.record_of(part)
                alone = len(parts) == 1  # a request's only part may borrow idle workers' cores
                if not self.send(part, record, alone):  # the common case sends at once, awaiting nothing
                    await self.dispatch(part, record, deadline, alone)
            if len(parts) == 1:  # the common case: no gather
                return [await parts[0].future]
            return list(await asyncio.gather(*(p.future for p in parts)))
        finally:
            for part in parts:
                self.forget(part)  # a part still on a worker is answered into the void

    def record_of(self, part: Part) -> bytes:
        """The part's ring record, stamped with its send time; 413 when no ring can take it."""
        part.message.sent = time.monotonic()  # the worker adds its wait in the ring to the queue stage
        record = self.link.encode(part.message)
        if len(record) > self.record_budget:
            # one input (or a rerank query with its documents) larger than a ring record can be
            raise errors.BodyTooLarge(f"this request needs a {len(record)}-byte record; the worker rings take "
                                      f"{self.record_budget} (raise ring_bytes)")  # fmt: skip
        return record

    def send(self, part: Part, record: bytes, alone: bool = False) -> bool:
        """Send a part where ``place`` allows, now; False when it must wait (no holder up, no
        room, a full ring, a busy background slot). 429 as ``place`` says. A request's only part
        (``alone``) may borrow idle workers' cores (``spare_for``)."""
        holders = self.up_holders(part.model)
        if not holders:
            return False
        worker = place(part, holders, self.config.max_pending_inputs)
        if worker is None:
            return False
        spare = self.spare_for(part, worker, alone)
        if not self.link.send_record(worker.index, self.with_loan(part, record, spare) if spare else record):
            worker.ring_full += 1  # the link asked the worker for a room signal
            return False
        self.track(part, worker)
        if spare:
            self.book_loan(part, worker, spare)
        return True

    async def dispatch(self, part: Part, record: bytes, deadline: float, alone: bool = False) -> None:
        """Send a part that could not be sent at once (``send``). An interactive part waits
        briefly on a full ring, then 429; a background part waits for its turn (a free slot,
        room, ring space)."""
        loop = asyncio.get_running_loop()
        ring_full_since: float | None = None
        while True:
            if not self.up_holders(part.model):  # every holder went down since the request arrived
                await self.holders(part.model, deadline, background=part.background)
                continue
            if self.send(part, record, alone):
                return
            if part.background:
                if not await self.wait_for_change(deadline):
                    raise errors.DeadlineExceeded("background request not sent within its deadline "
                                                  f"({self.config.request_timeout:g}s)")  # fmt: skip
                continue
            ring_full_since = ring_full_since or loop.time()
            if not await self.wait_for_change(min(deadline, ring_full_since + FULL_RING_WAIT_S)):
                raise errors.QueueFull("worker ring full; retry", retry_after=RETRY_AFTER_S)

    def spare_for(self, part: Part, worker: WorkerState, alone: bool) -> list[int]:
        """The idle workers' cores ``part`` may borrow on ``worker`` (``gateway/lending.py``)."""
        if not self.config.lend_idle_cores:
            return []
        return spare_cores(part, worker, self.workers_state, alone=alone, now=time.monotonic())

    def with_loan(self, part: Part, record: bytes, spare: list[int]) -> bytes:
        """``part`` encoded with the cores it may borrow. The message keeps no loan: a resend
        elsewhere, later, must not carry one decided for now."""
        part.message.spare_cores = spare
        try:
            return self.link.encode(part.message)
        finally:
            part.message.spare_cores = []

    def book_loan(self, part: Part, worker: WorkerState, spare: list[int]) -> None:
        """Count ``part`` on the workers whose cores it borrows until it leaves ``worker``: a part
        placed on a lender meanwhile would share a core with the loaned pass (``lent``)."""
        lent = set(spare)
        for other in self.workers_state:
            if other is not worker and lent.intersection(other.cores):
                other.lent = part

    def end_loans(self, part: Part) -> None:
        for other in self.workers_state:
            if other.lent is part:
                other.lent = None

    def track(self, part: Part, worker: WorkerState) -> None:
        part.worker = worker.index
        worker.parts[part.id] = part
        worker.outstanding_tokens += part.tokens
        worker.outstanding_inputs += part.inputs
        if part.background:
            worker.background = part
        self.arm_sweep()

    def arm_sweep(self) -> None:
        if self.sweep is None:
            self.sweep = asyncio.get_running_loop().call_later(SWEEP_S, self.expire)

    def expire(self) -> None:
        """The deadline sweep: fail every sent or parked part whose deadline has passed (its
        request's ``run_parts`` then withdraws it from its worker), and look again in ``SWEEP_S``
        while any part is still out. One timer for all the parts in flight, not one per request."""
        self.sweep = None
        now = asyncio.get_running_loop().time()
        out = False
        for state in self.workers_state:
            out = self.fail_expired(state.parts.values(), now) or out
        out = self.fail_expired(self.parked.values(), now) or out
        if out:
            self.arm_sweep()

    def fail_expired(self, parts: Iterable[Part], now: float) -> bool:
        """Fail those of ``parts`` past their deadline; True when any is still waiting."""
        waiting = False
        for part in parts:
            if part.future.done():
                continue
            if part.deadline <= now:
                part.future.set_exception(errors.DeadlineExceeded(
                    f"request not finished within its deadline ({self.config.request_timeout:g}s)"))  # fmt: skip
            else:
                waiting = True
        return waiting

    def untrack(self, part: Part, worker: WorkerState) -> bool:
        """Take an answered or withdrawn part off its worker (False if it was not there) and wake
        the senders waiting for room; a freed background slot goes to a parked part first."""
        if worker.parts.pop(part.id, None) is None:
            return False
        if self.config.lend_idle_cores:  # no loans to end otherwise: keep the answer path free of it
            self.end_loans(part)
        worker.outstanding_tokens -= part.tokens
        worker.outstanding_inputs -= part.inputs
        if not worker.parts:
            worker.idle_since = time.monotonic()
        if worker.background is part:
            worker.background = None
            if worker.up:
                self.resend_parked(worker)
        self.wake_senders()
        return True

    def forget(self, part: Part) -> None:
        """Stop waiting for a part; one still on a worker (its client left, or its deadline
        passed) is withdrawn there too, so it never reaches the model."""
        self.parked.pop(part.id, None)
        if part.worker < 0:
            return
        worker = self.workers_state[part.worker]
        if self.untrack(part, worker):
            self.withdrawn += 1
            # best effort: a full ring means the worker is busy, and the deadline drops it there
            self.link.send_record(worker.index, self.link.encode(Cancel(part.id)))
        future = part.future
        if not future.done():
            future.cancel()
        elif not future.cancelled():
            future.exception()  # failed by the sweep while its request failed otherwise: read, not logged

    # ---- WorkerEvents (from the supervisor) and results (from the link) --------------------------------------------------------------------
    def worker_ready(self, worker: int, ready: Ready) -> None:
        state = self.workers_state[worker]
        state.models = {m.name: m for m in ready.models}
        state.pid = ready.pid
        state.device, state.cores = ready.device, list(ready.cores)
        state.idle_since = time.monotonic()
        self.cards = None
        self.known.update(state.models)
        state.up = True
        if not self.booted:
            held = {name for w in self.workers_state if w.up for name in w.models}
            self.booted = all(name in held for name in self.configured)
        self.resend_parked(state)
        self.holder_wait.wake(state.models)  # requests parked for a holder go on at once
        self.wake_senders()  # senders waiting for room or ring space

    def worker_stats(self, worker: int, stats: Stats) -> None:
        state = self.workers_state[worker]
        state.stats = stats
        state.busy.observe(stats.pid, stats.counters.compute_us)

    def worker_status(self, worker: int, status: SlotStatus) -> None:
        self.workers_state[worker].status = status

    def worker_idle(self, worker: int) -> bool:
        return not self.workers_state[worker].parts

    def worker_unavailable(self, worker: int) -> None:
        self.workers_state[worker].up = False
        self.cards = None
        self.wake_senders()  # a part waiting on its full ring may go to another holder now

    def worker_room(self, worker: int, _: Room) -> None:
        """The worker took records off its request ring after a send found it full."""
        self.workers_state[worker].room_signals += 1
        self.wake_senders()

    def worker_result(self, worker: int, message: Vectors | Scores | Failed) -> None:
        state = self.workers_state[worker]
        part = state.parts.get(message.id)
        if part is None or not self.untrack(part, state):
            return  # its request timed out or was resent; nobody waits for this any more
        part.worker, part.served_by = -1, worker
        self.completed_parts += 1
        if not part.future.done():
            if isinstance(message, Failed):
                part.future.set_exception(errors.from_worker_failure(message.kind, part.failure_text(message)))
            else:
                part.future.set_result(message)

    def worker_lost(self, worker: int, reason: str) -> None:
        state = self.workers_state[worker]
        state.up = False
        self.cards = None
        orphans = list(state.parts.values())
        state.parts.clear()
        state.lent = None
        for part in orphans:
            self.end_loans(part)
        state.outstanding_tokens = state.outstanding_inputs = 0
        state.idle_since = time.monotonic()
        state.background = None
        if orphans:
            log.warning("worker %d %s with %d part(s) in flight", worker, reason, len(orphans))
        for part in orphans:
            part.worker = -1
            self.resend_or_fail(part, reason)
        self.wake_senders()

    def resend_or_fail(self, part: Part, reason: str) -> None:
        """A part whose worker died is resent once: to another up holder now, or, when none is
        up, to the first holder that comes back (parked until then, its deadline still bounds it).
        A part lost twice fails: it may be what kills workers."""
        if part.future.done():
            return
        if not part.resent:
            holders = self.up_holders(part.model)
            target = least_loaded(free_slots(holders) if part.background else holders)
            if target is None:
                self.parked[part.id] = part
                self.arm_sweep()
                return
            part.resent = True
            if self.link.send_record(target.index, self.link.encode(part.message)):
                self.track(part, target)
                return
        part.future.set_exception(errors.WorkerLost(
            f"the worker serving this request was lost ({reason}) and no other worker could take it",
            retry_after=RETRY_AFTER_S))  # fmt: skip

    def resend_parked(self, worker: WorkerState) -> None:
        for part in [p for p in self.parked.values() if p.model in worker.models]:
            if part.background and worker.background is not None:
                continue  # its slot is taken (perhaps by the part just resent): wait for it to free
            del self.parked[part.id]
            part.resent = True
            if self.link.send_record(worker.index, self.link.encode(part.message)):
                self.track(part, worker)
            elif not part.future.done():
                part.future.set_exception(errors.QueueFull("worker ring full; retry", retry_after=RETRY_AFTER_S))

    def wake_senders(self) -> None:
        """Every sender waiting in ``wait_for_change`` retries (one attribute test when none waits:
        results call this)."""
        change = self.change
        if change is not None:
            self.change = None
            change.set_result(None)


def worker_card(w: WorkerState) -> WorkerCard:
    # counters of an earlier incarnation (its last Stats before a respawn) are not this worker's
    counters = w.stats.counters if w.stats and w.stats.pid == w.pid else WorkerCounters()
    card = WorkerCard(index=w.index, up=w.up, models=sorted(w.models), outstanding_inputs=w.outstanding_inputs,
                      outstanding_tokens=w.outstanding_tokens, pid=w.pid, busy_share=round(w.busy.share(), 6),
                      ring_full=w.ring_full, room_signals=w.room_signals,
                      **msgspec.structs.asdict(counters))  # fmt: skip
    if w.status is not None:  # None only for a router no supervisor reports to (tests)
        card.role, card.device, card.cores = w.status.role, w.status.device, list(w.status.cores)
        card.state, card.restarts = w.status.state, dict(w.status.restarts)
    return card


def monotonic_deadline(loop_deadline: float) -> float:
    """The event loop's deadline on time.monotonic()'s clock, which every process shares."""
    return time.monotonic() + (loop_deadline - asyncio.get_running_loop().time())
