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

Results come back per request, in the request's original input order, whatever the sorting did.
The payload of an item is opaque here (the runtimes' ``Tokenized``); only its length counts.
"""

from __future__ import annotations

import heapq
import time
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from itertools import islice, repeat
from operator import itemgetter
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

LOOKAHEAD_BATCHES = 4  # default pool = this many full batches: enough rows for sorting to pay
OLDEST_EVERY = 4  # every 4th batch goes to the oldest request: a big one gets >= 1/4 of the batches


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
    results: np.ndarray | None = None


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
    padded_tokens: int  # rows x longest row: what the forward pass really computes
    # the batcher's own bookkeeping: keys may be reused after a cancel, request objects are not
    owners: list[_Request] = field(repr=False, default_factory=list)
    settled: bool = field(repr=False, default=False)

    @property
    def real_tokens(self) -> int:
        return sum(self.lengths)

    def __len__(self) -> int:
        return len(self.payloads)


class _Plan(NamedTuple):
    pool: list[_Entry]
    start: int
    end: int
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
        self.clock = clock
        self._requests: dict[object, _Request] = {}  # every unfinished request, arrival order
        self._queued = 0
        # cumulative, so the padding saved by sorting can be measured
        self.padded_tokens = 0
        self.real_tokens = 0
        self.batches = 0

    # ---- state ---------------------------------------------------------------------------
    @property
    def pending_items(self) -> int:
        """Items waiting for a batch (not counting those in flight)."""
        return self._queued

    @property
    def pending_requests(self) -> int:
        """Requests not yet completed, queued or in flight."""
        return len(self._requests)

    # ---- input ---------------------------------------------------------------------------
    def add(self, key: object, lengths: Sequence[int], payloads: Sequence[object], *,
            now_ns: int | None = None) -> None:  # fmt: skip
        """Queue one request; ``key`` (hashable) names it in results, ``cancel`` and ``fail_batch``."""
        lengths = [int(n) for n in lengths]
        self._check_request(key, lengths, payloads)
        widths = [max(1, n) for n in lengths]
        request = _Request(key, lengths, widths, list(payloads), self._now(now_ns),
                           dict.fromkeys(range(len(lengths))), len(lengths))  # fmt: skip
        self._requests[key] = request
        self._queued += len(lengths)

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
        self._queued -= dropped
        return dropped

    # ---- batches -------------------------------------------------------------------------
    def next_batch(self, now_ns: int | None = None) -> Batch | None:
        """The next forward batch, or None when nothing is queued (or worth waiting for)."""
        plan = self._plan()
        if plan is None or self._hold(plan, self._now(now_ns)):
            return None
        return self._take(plan.pool[plan.start : plan.end])

    def wait_hint_s(self, now_ns: int | None = None) -> float | None:
        """How long the loop may block before ``next_batch`` can return something (max_wait_us)."""
        if not self.max_wait_ns or not self._queued:
            return None
        plan = self._plan()
        if plan is None or plan.full:
            return 0.0
        return max(0, self._oldest_ns() + self.max_wait_ns - self._now(now_ns)) / 1e9

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
    def _plan(self) -> _Plan | None:
        if not self._queued:
            return None
        pool, whole = self._pool(self._order())
        if self.sort_by_length:
            # Stable sort: the anchor (pool[0]) stays first among items of its length.
            anchor = pool[0][0]
            pool.sort(key=_width)
            at = bisect_left(pool, anchor, key=_width)
        else:
            at = 0
        start, end = self._block_around(pool, at)
        full = end - start == self.max_batch_size or end < len(pool) or not whole
        return _Plan(pool, start, end, full)

    def _order(self) -> list[_Request]:
        """Requests with queued items, in the order they offer them (step 1 of the docstring).
        Only the first ``lookahead`` can reach the pool (each offers at least one item)."""
        live = [r for r in self._requests.values() if r.queued]  # arrival order
        if self.batches % OLDEST_EVERY == OLDEST_EVERY - 1:
            return live[: self.lookahead]
        return heapq.nsmallest(self.lookahead, live, key=_queued_count)  # stable: ties keep arrival order

    def _pool(self, order: list[_Request]) -> tuple[list[_Entry], bool]:
        """Chunks from the requests in ``order``, round after round; True when all queued are in."""
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
        return pool, len(pool) == self._queued

    def _block_around(self, pool: list[_Entry], at: int) -> tuple[int, int]:
        """The block holding pool[at] when the pool is cut greedily, front to back, into batches."""
        widths = list(map(_width, pool))
        block_end = self._sorted_block_end if self.sort_by_length else self._block_end
        start = 0
        while True:
            end = block_end(widths, start)
            if at < end:
                return start, end
            start = end

    def _sorted_block_end(self, widths: list[int], start: int) -> int:
        # Sorted: the last row is the widest, and rows x width grows with rows; binary search.
        most = min(len(widths) - start, self.max_batch_size)
        rows = bisect_right(range(1, most + 1), self.max_batch_tokens, key=lambda k: k * widths[start + k - 1])
        return start + rows  # rows >= 1: add() refuses items longer than the budget

    def _block_end(self, widths: list[int], start: int) -> int:
        end, widest = start, 0
        limit = min(len(widths), start + self.max_batch_size)
        while end < limit:
            widest = max(widest, widths[end])
            if (end - start + 1) * widest > self.max_batch_tokens:
                break
            end += 1
        return end  # > start: add() refuses items longer than the budget

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
        self._queued -= len(entries)
        lengths = [request.lengths[index] for _, request, index in entries]
        batch = Batch(
            payloads=[request.payloads[index] for _, request, index in entries],
            lengths=lengths,
            keys=[request.key for _, request, _ in entries],
            indices=[index for _, _, index in entries],
            padded_tokens=len(entries) * max(lengths),
            owners=[request for _, request, _ in entries],
        )
        self.batches += 1
        self.padded_tokens += batch.padded_tokens
        self.real_tokens += sum(lengths)
        return batch

    def _now(self, now_ns: int | None) -> int:
        return self.clock() if now_ns is None else now_ns

