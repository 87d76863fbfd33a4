"""In-flight coalescing (single-flight): one computation per key, however many callers want it.

``InFlight.launch(keys, compute)`` starts ONE task that computes a value for each key and
registers a future per key; anyone who asks for a key while it is in flight gets that future
from ``joining(key)`` instead of computing it again. The task settles every future when it ends,
with its value or with the SAME exception, and unregisters the keys.

Three properties matter, and each is why the code looks the way it does:

- **A caller that leaves cancels the shared work only if it was the last one waiting.** The
  computation runs in its own task, not in any caller's, and callers wait with ``settle``, which
  counts them in and out of each computation (``Flight``). A client that disconnects while others
  wait leaves their answer, and the cache fill, untouched; when the last waiter leaves (its
  client gone, or its deadline passed), nobody wants the work any more: its keys are released at
  once (a later request launches afresh rather than joining a dying flight) and its task is
  cancelled, which withdraws its parts from the workers before they reach the model.
- **Nothing waits forever.** ``settle`` takes each waiter's own deadline; the computation has the
  deadline of the caller that launched it (the backend enforces it). A waiter whose computations
  all end by its own deadline (declared at ``launch``) waits with no timer: they end in time, and
  the common waiter is the launcher itself, whose deadline is the computation's. Only a waiter
  with an earlier deadline than something it waits for needs a timer of its own.
- **Failures are shared, not duplicated.** A failed computation fails every waiter with the same
  exception object; nobody retries it behind the others' backs.

Generic over the key and value: the caching backend (``gateway/cached_backend.py``) keys by the result
cache's key, so coalescing and the cache agree on what "the same input" means.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from typing import Any, Awaitable, Callable, Generic, Hashable, Sequence, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Flight:
    """One launched computation and how many callers are waiting for any of its values."""

    __slots__ = ("task", "waiters", "abandon", "deadline")

    def __init__(self, task: asyncio.Task[None], abandon: Callable[[], None], deadline: float) -> None:
        self.task = task
        self.waiters = 0
        self.abandon = abandon  # release its keys: nobody may join it from now on
        self.deadline = deadline  # loop time by which the computation ends (math.inf: unknown)

    def leave(self) -> None:
        self.waiters -= 1
        if self.waiters == 0 and not self.task.done():
            self.abandon()
            self.task.cancel()


# Each launched future's flight, for ``settle``. Entries are removed when the flight's task ends
# (a done callback, which runs even for a task cancelled before it started). Not a
# WeakKeyDictionary: a Flight refers to its futures (``abandon``), a value holding its own key, so
# no entry would ever have left and every computation's futures, task and values with it.
_FLIGHTS: dict[asyncio.Future[Any], Flight] = {}


class InFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._flights: dict[K, asyncio.Future[V]] = {}
        # A bare create_task is only weakly referenced by the loop; hold the tasks until they end.
        self._tasks: set[asyncio.Task[None]] = set()
        self.coalesced: Counter[str] = Counter()  # joins per label (the model), for /cache-stats

    def __len__(self) -> int:
        return len(self._flights)

    def joining(self, key: K, label: str = "") -> asyncio.Future[V] | None:
        """The future of ``key``'s computation if one is in flight (counted as coalesced under
        ``label``), else None."""
        future = self._flights.get(key)
        if future is not None:
            self.coalesced[label] += 1
        return future

    def launch(self, keys: Sequence[K], compute: Callable[[], Awaitable[Sequence[V]]],
               deadline: float = math.inf) -> list[asyncio.Future[V]]:  # fmt: skip
        """Start ``compute()`` (one value per key, in order) as a task of its own; return one
        future per key. Keys must be distinct and not in flight (ask ``joining`` first).
        ``deadline``: the loop time by which ``compute`` is known to end, failed or not (it
        enforces the deadline itself); waiters with no earlier deadline then need no timer."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[V]] = [loop.create_future() for _ in keys]
        for key, future in zip(keys, futures):
            self._flights[key] = future
        task = loop.create_task(self._run(keys, futures, compute))
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._landed(done, keys, futures))
        flight = Flight(task, lambda: self._forget(keys, futures), deadline)
        for future in futures:
            _FLIGHTS[future] = flight
        return futures

    def _landed(self, task: asyncio.Task[None], keys: Sequence[K], futures: list[asyncio.Future[V]]) -> None:
        """The task ended: it is no longer held, and its futures have no flight to count waiters
        in. A task cancelled before it first ran never reached ``_run``'s own clean-up, so its
        keys are released and its futures failed here too (``_run`` did both when it ran)."""
        self._tasks.discard(task)
        if not all(future.done() for future in futures):
            self._forget(keys, futures)
            self._fail(futures, asyncio.CancelledError())
        for future in futures:
            _FLIGHTS.pop(future, None)

    async def _run(self, keys: Sequence[K], futures: list[asyncio.Future[V]],
                   compute: Callable[[], Awaitable[Sequence[V]]]) -> None:  # fmt: skip
        try:
            values = await compute()
            if len(values) != len(keys):  # a future left unset would hold its waiters to their deadline
                raise RuntimeError(f"the computation returned {len(values)} values for {len(keys)} keys")
        except BaseException as exc:  # noqa: BLE001 - every waiter must learn of ANY failure
            self._fail(futures, exc)
            if not isinstance(exc, Exception):
                raise  # cancellation or exit: settle the waiters, then let it propagate
        else:
            for future, value in zip(futures, values):
                if not future.done():
                    future.set_result(value)
        finally:
            self._forget(keys, futures)

    @staticmethod
    def _fail(futures: list[asyncio.Future[V]], exc: BaseException) -> None:
        if isinstance(exc, asyncio.CancelledError):
            # Cancelled because every waiter left, or by loop shutdown: nobody may hang on it.
            exc = RuntimeError("the shared computation was cancelled")
        for future in futures:
            if not future.done():
                future.set_exception(exc)
                future.exception()  # mark retrieved: with every waiter gone, nobody else will

    def _forget(self, keys: Sequence[K], futures: list[asyncio.Future[V]]) -> None:
        for key, future in zip(keys, futures):
            if self._flights.get(key) is future:
                del self._flights[key]


async def settle(futures: Sequence[asyncio.Future[V]], deadline: float) -> bool:
    """Wait until every future is done or ``deadline`` (loop time) passes; True when all are done.
    The caller counts as a waiter of each computation it waits for while it waits: when it leaves
    (cancelled, or past its deadline) as the last waiter of one, that computation is withdrawn."""
    pending = {f for f in futures if not f.done()}
    if not pending:
        return True
    timeout = deadline - asyncio.get_running_loop().time()
    if timeout <= 0:
        return False
    flights: set[Flight] = set()
    bounded = True  # every computation waited for ends by this waiter's deadline: no timer needed
    for future in pending:
        flight = _FLIGHTS.get(future)
        if flight is None:
            bounded = False
            continue
        flights.add(flight)
        bounded = bounded and flight.deadline <= deadline
    for flight in flights:
        flight.waiters += 1
    try:
        if bounded:
            await all_done(pending)
            return True
        _, still = await asyncio.wait(pending, timeout=timeout)
    finally:
        for flight in flights:
            flight.leave()
    return not still


async def all_done(pending: set[asyncio.Future[V]]) -> None:
    """Wait until every one of ``pending`` is done, never cancelling them: a waiter that is
    cancelled leaves them to the others. ``asyncio.wait`` without its timeout and its checks."""
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    left = len(pending)

    def landed(_: asyncio.Future[V]) -> None:
        nonlocal left
        left -= 1
        if left == 0 and not waiter.done():
            waiter.set_result(None)

    for future in pending:
        future.add_done_callback(landed)
    try:
        await waiter
    finally:
        for future in pending:
            future.remove_done_callback(landed)
