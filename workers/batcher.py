"""Forward batches by padded-token budget: continuous, length-sorted and fair across requests.

A request is many items (one text each). The worker adds every request as it arrives and asks
for the next batch whenever the model is free; there is no artificial delay unless
``max_wait_us`` is set. A batch closes at ``max_batch_tokens`` *padded* tokens (rows x longest
row) or at ``max_batch_size`` rows; the padded budget is never exceeded.

How the next batch is chosen, and why:

1. **Order.** Requests with queued items are offered fewest-queued-items first, ties in arrival
   order (shortest remaining work first). A 1-item request queued behind a 2,048-item one is
   served in the next batch; equal requests finish one after the other in arrival order instead
   of all together at the end (round-robin sharing made 64 concurrent 32-item requests complete
   in one burst ~10 s later, so none finished inside a benchmark window). Every
   ``OLDEST_EVERY``-th batch the order is plain arrival order, so the oldest request always
   progresses: a big request is slowed, never starved, by a stream of small ones.
2. **Pool.** In that order, each request offers its next ``chunk_items`` queued items (input
   order), round after round, until the pool holds ``lookahead`` items or every queued item.
3. **Sort and cut.** The pool is sorted by length and cut, shortest first, into blocks that each
   fill the budget. Sorting only cuts padding when the pool spans several batches (inside one
   batch the padding does not depend on order), which is why ``lookahead`` is a few batches.
4. **Anchor.** The batch is the block that holds the *anchor*: the first queued item of the
   first request in the order, whatever its length, so that request is always served.
   **Split** (``split_passes``, off by default: it measured as no win, see below). The block is
   cut again into the passes that compute it at least cost (below), only the anchor's pass runs
   and the rest stays queued, to be pooled again with what arrives meanwhile, so a long item can
   wait one pass for other long ones. An item is left behind at most once (a block holding one
   already deferred runs whole): unbounded, a long text waited until it was the oldest queued
   item and the c=32 p99 latency doubled. Measured (``bench split``, ``bench serve``): the passes
   computed hold the same padding either way, since the runtime cuts a whole batch into the
   same cheapest passes at forward time, and served c=32 throughput with it was 0.65-1.31x
   that without (four interleaved pairs, three below 1).
5. **Priority.** Steps 1 to 4 run within a priority class (``appliance.protocol``: interactive
   0, background 1; lower first), each class counting its own batches for step 1's oldest turn.
   The most urgent class with queued items forms the batch; only when the batch holds every
   queued item of that class do lower classes fill the room left, shortest first, up to twice
   the padded tokens of the urgent items. A running batch cannot be interrupted, so this keeps a
   job from slowing single-sentence traffic: an interactive item waits for the one batch already
   running, then computes in a batch at most twice its own.
6. **Pace.** A background-only batch that starts within ``PACE_S`` of the last interactive batch
   is cut to that batch's padded tokens (one item at least): an interactive request arriving
   during it waits about as long as behind interactive work. Later, the whole budget again.

What bounds background work: it runs whenever no interactive item is queued (at least its anchor
item, so every background request progresses) and in the room interactive batches leave. Under
interactive load that keeps an item queued at every step and fills every batch it waits, bounded
only by its deadline: the intended trade-off, as a job is throughput work nobody watches live.

Counting: ``padded_tokens`` (per batch and cumulative) is what the model computes. Given
``overhead_tokens`` (a forward pass's fixed cost in padded-token units, which a CPU runtime
measures at warm-up and uses to cut a batch into passes, ``workers.runtimes.chunking``) that is
rows x longest row of each of those passes, else of the whole batch: counting the batch as
formed showed 1.6x real tokens at c=32 single sentences when the passes computed held 1.15x.

Results come back per request, in the request's original input order, whatever the sorting did.
The payload of an item is opaque here (the runtimes' ``Tokenized``); only its length counts.
"""

from __future__ import annotations

import heapq
import math
import time
from bisect import bisect_left, bisect_right
from collections import Counter
from dataclasses import dataclass, field
from itertools import islice, repeat
from operator import itemgetter
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from appliance.protocol import INTERACTIVE
from workers.runtimes.chunking import MAX_OVERHEAD_TOKENS, plan_chunks

LOOKAHEAD_BATCHES = 4  # default pool = this many full batches: enough rows for sorting to pay
OLDEST_EVERY = 4  # every 4th batch goes to the oldest request: a big one gets >= 1/4 of the batches
PACE_S = 0.25  # how long after an interactive batch background batches keep to its size (step 6)


def check_budget(max_batch_tokens: int, max_length: int) -> None:
    """Refuse at start-up a budget that cannot hold one input of the model's max length."""
    if max_length < 1:
        raise ValueError(f"the model's max length must be at least 1 token, got {max_length}")
    if max_length > max_batch_tokens:
        raise ValueError(
            f"max_batch_tokens = {max_batch_tokens} cannot hold one input of the model's max length "
            f"({max_length} tokens): raise max_batch_tokens to at least {max_length}, or lower the "
            f"model's max_length"
        )


@dataclass(slots=True, eq=False)
class _Request:
    key: object
    lengths: list[int]
    widths: list[int]  # what each item counts against the budget: its length, at least 1 (a row)
    payloads: list[object]
    arrived_ns: int
    queued: dict[int, None]  # item indices not yet in a batch, in input order (an ordered set)
    remaining: int  # items not yet completed (queued + in flight)
    priority: int = INTERACTIVE
    results: np.ndarray | None = None
    left_behind: set[int] = field(default_factory=set)  # queued items a split has already deferred once


# One pool item: (width, request, index in the request). Plain tuples, not a NamedTuple: the pool
# is rebuilt for every batch and building it is most of the batcher's cost.
_Entry = tuple[int, _Request, int]
_width = itemgetter(0)


def _queued_count(request: _Request) -> int:
    return len(request.queued)


@dataclass(slots=True, eq=False)
class Batch:
    """One forward pass; items in forward order (shortest first when sorting)."""

    payloads: list[object]
    lengths: list[int]
    keys: list[object]  # the request each item belongs to
    indices: list[int]  # each item's position in its request's inputs
    padded_tokens: int  # rows x longest row of each pass the runtime cuts it into: what it computes
    # the batcher's own bookkeeping: keys may be reused after a cancel, request objects are not
    owners: list[_Request] = field(repr=False, default_factory=list)
    settled: bool = field(repr=False, default=False)

    @property
    def real_tokens(self) -> int:
        return sum(self.lengths)

    def __len__(self) -> int:
        return len(self.payloads)


class _Plan(NamedTuple):
    priority: int  # the class the batch comes from (step 5)
    entries: list[_Entry]  # that class's block, then the fill from lower classes
    padded_tokens: int  # of the class's block alone
    full: bool  # no later arrival could make this batch any bigger


class Batcher:
    """Pending items of one model, handed out as forward batches (see the module docstring)."""

    def __init__(
        self,
        max_batch_tokens: int,
        max_batch_size: int,
        *,
        max_wait_us: int = 0,
        chunk_items: int | None = None,
        lookahead: int | None = None,
        sort_by_length: bool = True,
        overhead_tokens: float | None = None,
        split_passes: bool = False,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        if max_batch_tokens < 1 or max_batch_size < 1:
            raise ValueError(f"max_batch_tokens ({max_batch_tokens}) and max_batch_size ({max_batch_size}) "
                             f"must be at least 1")  # fmt: skip
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.max_wait_ns = max(0, max_wait_us) * 1000
        self.chunk_items = max(1, chunk_items or max_batch_size)
        self.lookahead = max(1, lookahead or LOOKAHEAD_BATCHES * max_batch_size)
        self.sort_by_length = sort_by_length
        # None, or padding about as cheap as a pass (a GPU): batches run (and count) as one pass
        self.overhead_tokens = overhead_tokens if overhead_tokens and overhead_tokens < MAX_OVERHEAD_TOKENS else None
        self.split_passes = split_passes
        self.clock = clock
        self._requests: dict[object, _Request] = {}  # every unfinished request, arrival order
        self._queued_by: Counter[int] = Counter()  # items waiting for a batch, per priority
        self._turns: Counter[int] = Counter()  # batches each priority class formed (step 1's oldest turn)
        self._pace: tuple[int, int] | None = None  # (padded tokens, ns) of the last interactive batch
        # cumulative, so the padding saved by sorting can be measured
        self.padded_tokens = 0
        self.real_tokens = 0
        self.batches = 0

    # ---- state ---------------------------------------------------------------------------
    @property
    def pending_items(self) -> int:
        """Items waiting for a batch (not counting those in flight)."""
        return sum(self._queued_by.values())

    @property
    def pending_requests(self) -> int:
        """Requests not yet completed, queued or in flight."""
        return len(self._requests)

    @property
    def urgency(self) -> float:
        """The most urgent priority with queued items (lower first); inf when nothing is queued."""
        return min((p for p, n in self._queued_by.items() if n), default=math.inf)

    # ---- input ---------------------------------------------------------------------------
    def add(self, key: object, lengths: Sequence[int], payloads: Sequence[object], *,
            priority: int = INTERACTIVE, now_ns: int | None = None) -> None:  # fmt: skip
        """Queue one request of class ``priority`` (step 5); ``key`` (hashable) names it in results."""
        lengths = [int(n) for n in lengths]
        self._check_request(key, lengths, payloads)
        widths = [max(1, n) for n in lengths]
        request = _Request(key, lengths, widths, list(payloads), self._now(now_ns),
                           dict.fromkeys(range(len(lengths))), len(lengths), priority)  # fmt: skip
        self._requests[key] = request
        self._queued_by[priority] += len(lengths)

    def _check_request(self, key: object, lengths: list[int], payloads: Sequence[object]) -> None:
        # Nothing is queued that could never run: a refused request leaves no trace behind.
        if key in self._requests:
            raise ValueError(f"request {key!r} is already queued")
        if not lengths or len(lengths) != len(payloads):
            raise ValueError(f"request {key!r}: {len(lengths)} lengths for {len(payloads)} payloads "
                             f"(need at least one item, one length each)")  # fmt: skip
        for i, length in enumerate(lengths):
            if not 0 <= length <= self.max_batch_tokens:
                raise ValueError(f"request {key!r} item {i}: {length} tokens cannot fit a batch of "
                                 f"max_batch_tokens = {self.max_batch_tokens} (see check_budget)")  # fmt: skip

    def cancel(self, key: object) -> int:
        """Forget a request (client gone, deadline): drop its queued items, ignore those in flight."""
        request = self._requests.pop(key, None)
        if request is None:
            return 0
        dropped = len(request.queued)
        request.queued.clear()
        self._queued_by[request.priority] -= dropped
        return dropped

    # ---- batches -------------------------------------------------------------------------
    def next_batch(self, now_ns: int | None = None) -> Batch | None:
        """The next forward batch, or None when nothing is queued (or worth waiting for)."""
        now = self._now(now_ns)
        plan = self._plan(now)
        if plan is None or self._hold(plan, now):
            return None
        self._turns[plan.priority] += 1
        if plan.priority == INTERACTIVE:
            self._pace = (plan.padded_tokens, now)
        return self._take(plan.entries)

    def wait_hint_s(self, now_ns: int | None = None) -> float | None:
        """How long the loop may block before ``next_batch`` can return something (max_wait_us)."""
        if not self.max_wait_ns or not self.pending_items:
            return None
        now = self._now(now_ns)
        plan = self._plan(now)
        if plan is None or plan.full:
            return 0.0
        return max(0, self._oldest_ns() + self.max_wait_ns - now) / 1e9

    def complete(self, batch: Batch, outputs: np.ndarray) -> list[tuple[object, np.ndarray]]:
        """Store a batch's outputs; return (key, rows in input order) for each request now finished."""
        outputs = np.asarray(outputs)
        if outputs.ndim < 1 or outputs.shape[0] != len(batch):
            raise ValueError(f"{len(batch)} batch items but outputs of shape {outputs.shape}")
        self._settle(batch)
        done: list[tuple[object, np.ndarray]] = []
        for row, (key, index, owner) in enumerate(zip(batch.keys, batch.indices, batch.owners)):
            if self._requests.get(key) is not owner:
                continue  # cancelled while in flight (perhaps its key is reused since)
            if owner.results is None:
                owner.results = np.empty((len(owner.lengths), *outputs.shape[1:]), dtype=outputs.dtype)
            owner.results[index] = outputs[row]
            owner.remaining -= 1
            if owner.remaining == 0:
                del self._requests[key]
                done.append((key, owner.results))
        return done

    def fail_batch(self, batch: Batch) -> list[object]:
        """Keys of the requests a failed batch held; each is cancelled (its other items too)."""
        self._settle(batch)
        hit: list[object] = []
        for key, owner in dict.fromkeys(zip(batch.keys, batch.owners)):
            if self._requests.get(key) is owner:
                self.cancel(key)
                hit.append(key)
        return hit

    @staticmethod
    def _settle(batch: Batch) -> None:
        # A batch completed twice would count its items twice and finish requests early.
        if batch.settled:
            raise ValueError("this batch was already completed or failed")
        batch.settled = True

    # ---- choosing the next batch -----------------------------------------------------------
    def _plan(self, now_ns: int) -> _Plan | None:
        if not self.pending_items:
            return None
        classes = self._classes()
        priority = min(classes)  # step 5: the most urgent class forms the batch
        pool, whole = self._pool(self._order(classes.pop(priority), self._turns[priority]), priority)
        start, end, at = self._cut(pool, self._budget(priority, now_ns))
        full = end - start == self.max_batch_size or end < len(pool) or not whole
        start, end, full = self._split(pool, start, end, at, full)
        entries = pool[start:end]
        padded = len(entries) * max(map(_width, entries))
        if start == 0 and not full and classes:  # every queued item of the class is in: room to fill
            entries = self._fill(entries, padded, classes)
        return _Plan(priority, entries, padded, full)

    def _classes(self) -> dict[int, list[_Request]]:
        """Requests with queued items by priority, each list in arrival order."""
        classes: dict[int, list[_Request]] = {}
        for request in self._requests.values():
            if request.queued:
                classes.setdefault(request.priority, []).append(request)
        return classes

    def _order(self, live: list[_Request], turn: int) -> list[_Request]:
        """One class's requests (arrival order) in the order they offer items (step 1); ``turn``
        counts the class's batches. Only the first ``lookahead`` can reach the pool."""
        if turn % OLDEST_EVERY == OLDEST_EVERY - 1:
            return live[: self.lookahead]
        return heapq.nsmallest(self.lookahead, live, key=_queued_count)  # stable: ties keep arrival order

    def _budget(self, priority: int, now_ns: int) -> int:
        """Step 6: a background batch soon after an interactive one keeps to its size."""
        if priority == INTERACTIVE or self._pace is None or now_ns - self._pace[1] >= PACE_S * 1e9:
            return self.max_batch_tokens
        return min(self.max_batch_tokens, self._pace[0])

    def _cut(self, pool: list[_Entry], budget: int) -> tuple[int, int, int]:
        """Steps 3 and 4: sort the pool (in place) and find the anchor's block: (start, end, anchor)."""
        if not self.sort_by_length:
            return *self._block_around(pool, 0, budget), 0
        anchor = pool[0][0]
        pool.sort(key=_width)  # stable: the anchor (pool[0]) stays first among items of its length
        at = bisect_left(pool, anchor, key=_width)
        return *self._block_around(pool, at, budget), at

    def _split(self, pool: list[_Entry], start: int, end: int, at: int, full: bool) -> tuple[int, int, bool]:
        """Step 4's split: the anchor's pass of the block's cheapest passes, and whether the plan
        is full (a split one is: waiting could only add items it would leave out)."""
        if not self.split_passes or self.overhead_tokens is None or not self.sort_by_length or end - start < 2:
            return start, end, full
        widths = [entry[0] for entry in pool[start:end]]
        if (end - start) * widths[-1] - sum(widths) <= self.overhead_tokens:
            return start, end, full  # the padding saved by any split is less than one more pass
        # sorted, so plan_chunks keeps the order and every pass is a contiguous run of the block
        chunk = next(c for c in plan_chunks(widths, self.overhead_tokens) if c[0] <= at - start <= c[-1])
        first, last = start + chunk[0], start + chunk[-1] + 1
        behind = pool[start:first] + pool[last:end]
        if not behind or any(index in request.left_behind for _, request, index in behind):
            return start, end, full  # nothing to defer, or an item was deferred before: run it now
        for _, request, index in behind:
            request.left_behind.add(index)
        return first, last, True

    def _fill(self, entries: list[_Entry], padded: int, classes: dict[int, list[_Request]]) -> list[_Entry]:
        """Step 5: lower classes fill the room left, shortest first, within twice ``padded`` tokens."""
        cap = min(self.max_batch_tokens, 2 * padded)
        rows, widest = len(entries), max(map(_width, entries))
        for priority in sorted(classes):
            pool, _ = self._pool(self._order(classes[priority], self._turns[priority]), priority)
            if self.sort_by_length:
                pool.sort(key=_width)
            for entry in pool:
                wider = max(widest, entry[0])
                if rows == self.max_batch_size or (rows + 1) * wider > cap:
                    return entries
                entries.append(entry)
                rows, widest = rows + 1, wider
        return entries

    def _pool(self, order: list[_Request], priority: int) -> tuple[list[_Entry], bool]:
        """Chunks from the requests in ``order``, round after round; True when all of ``priority``'s are in."""
        pool: list[_Entry] = []
        rounds: Iterable[tuple[_Request, Iterator[int]]] = [(r, iter(r.queued)) for r in order]
        while len(pool) < self.lookahead:
            later: list[tuple[_Request, Iterator[int]]] = []
            for request, cursor in rounds:
                chunk = list(islice(cursor, self.chunk_items))
                pool.extend(zip(map(request.widths.__getitem__, chunk), repeat(request), chunk))
                if len(pool) >= self.lookahead:
                    break
                if len(chunk) == self.chunk_items:
                    later.append((request, cursor))
            if not later:
                break
            rounds = later
        return pool, len(pool) == self._queued_by[priority]

    def _block_around(self, pool: list[_Entry], at: int, budget: int) -> tuple[int, int]:
        """The block holding pool[at] when the pool is cut greedily, front to back, into batches of
        ``budget`` padded tokens (one row at least: step 6's budget may be below one item)."""
        widths = list(map(_width, pool))
        block_end = self._sorted_block_end if self.sort_by_length else self._block_end
        start = 0
        while True:
            end = block_end(widths, start, budget)
            if at < end:
                return start, end
            start = end

    def _sorted_block_end(self, widths: list[int], start: int, budget: int) -> int:
        # Sorted: the last row is the widest, and rows x width grows with rows; binary search.
        most = min(len(widths) - start, self.max_batch_size)
        rows = bisect_right(range(1, most + 1), budget, key=lambda k: k * widths[start + k - 1])
        return start + max(1, rows)

    def _block_end(self, widths: list[int], start: int, budget: int) -> int:
        end, widest = start, 0
        limit = min(len(widths), start + self.max_batch_size)
        while end < limit:
            widest = max(widest, widths[end])
            if end > start and (end - start + 1) * widest > budget:
                break
            end += 1
        return end

    def _hold(self, plan: _Plan, now_ns: int) -> bool:
        """max_wait_us: keep a batch that could still grow until its oldest item has waited enough."""
        if plan.full or not self.max_wait_ns:
            return False
        return now_ns - self._oldest_ns() < self.max_wait_ns

    def _oldest_ns(self) -> int:
        return next(r.arrived_ns for r in self._requests.values() if r.queued)  # arrival order

    def _take(self, entries: list[_Entry]) -> Batch:
        for _, request, index in entries:
            del request.queued[index]
            request.left_behind.discard(index)
            self._queued_by[request.priority] -= 1
        lengths = [request.lengths[index] for _, request, index in entries]
        batch = Batch(
            payloads=[request.payloads[index] for _, request, index in entries],
            lengths=lengths,
            keys=[request.key for _, request, _ in entries],
            indices=[index for _, _, index in entries],
            padded_tokens=self._passes_padded_tokens(lengths),
            owners=[request for _, request, _ in entries],
        )
        self.batches += 1
        self.padded_tokens += batch.padded_tokens
        self.real_tokens += sum(lengths)
        return batch

    def _passes_padded_tokens(self, lengths: list[int]) -> int:
        # the same cut as the runtime's forward_in_chunks: same lengths, same overhead
        if self.overhead_tokens is None or len(lengths) < 2:
            return len(lengths) * max(lengths)
        return sum(len(chunk) * max(lengths[i] for i in chunk) for chunk in plan_chunks(lengths, self.overhead_tokens))

    def _now(self, now_ns: int | None) -> int:
        return self.clock() if now_ns is None else now_ns

