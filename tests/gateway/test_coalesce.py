"""``gateway/coalesce.py``: single-flight under asyncio. One computation per key however many
wait; a failure reaches every waiter as the same error; a cancelled waiter (a client that went
away) cancels nothing others still wait for, and the last one to leave withdraws the work; every
wait ends by its deadline."""

from __future__ import annotations

import asyncio
import gc
from typing import Any, Awaitable, Callable

import pytest

from gateway.coalesce import InFlight, settle

pytestmark = pytest.mark.timeout(20)


class Computation:
    """A computation the test releases by hand, counting how often it ran."""

    def __init__(self, values: list[str], error: BaseException | None = None) -> None:
        self.values, self.error = values, error
        self.release = asyncio.Event()
        self.runs = 0
        self.finished = False
        self.cancelled = False

    async def __call__(self) -> list[str]:
        self.runs += 1
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        self.finished = True
        if self.error is not None:
            raise self.error
        return self.values


async def get(flights: InFlight[str, str], key: str, compute: Callable[[], Awaitable[list[str]]],
              deadline: float = float("inf")) -> str:  # fmt: skip
    """What a request does: join the key's flight, or launch it; then wait by its deadline."""
    future = flights.joining(key, "m") or flights.launch([key], compute)[0]
    if not await settle([future], deadline):
        raise TimeoutError(key)
    return future.result()


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_many_waiters_one_computation() -> None:
    async def main() -> None:
        flights: InFlight[str, str] = InFlight()
        compute = Computation(["v"])
        waiters = [asyncio.create_task(get(flights, "k", compute)) for _ in range(200)]
        await asyncio.sleep(0)  # every waiter has joined before the computation may finish
        assert len(flights) == 1 and flights.coalesced["m"] == 199
        compute.release.set()
        assert await asyncio.gather(*waiters) == ["v"] * 200
        assert compute.runs == 1 and len(flights) == 0  # done: the key is free again

    run(main())


def test_keys_of_one_launch_are_joinable_one_by_one() -> None:
    async def main() -> None:
        flights: InFlight[str, str] = InFlight()
        compute = Computation(["a!", "b!", "c!"])
        flights.launch(["a", "b", "c"], compute)
        later = [flights.joining(k) for k in ("c", "a")]
        compute.release.set()
        assert await settle([f for f in later if f], float("inf"))
        assert [f.result() for f in later if f] == ["c!", "a!"]

    run(main())


def test_a_failure_reaches_every_waiter_as_the_same_error() -> None:
    async def main() -> None:
        flights: InFlight[str, str] = InFlight()
        error = ConnectionError("worker 1 died with the batch in flight")
        compute = Computation(["never"], error=error)
        waiters = [asyncio.create_task(get(flights, "k", compute)) for _ in range(20)]
        await asyncio.sleep(0)
        compute.release.set()
        outcomes = await asyncio.gather(*waiters, return_exceptions=True)
        assert all(o is error for o in outcomes), outcomes
        assert compute.runs == 1 and len(flights) == 0
        # a fresh request after the failure computes again rather than inheriting it
        retry = Computation(["ok"])
        retry.release.set()
        assert await get(flights, "k", retry) == "ok"

    run(main())


def test_a_cancelled_waiter_does_not_cancel_the_computation() -> None:
    async def main() -> None:
        flights: InFlight[str, str] = InFlight()
        compute = Computation(["v"])
        leader = asyncio.create_task(get(flights, "k", compute))  # launches it
        await asyncio.sleep(0)
        follower = asyncio.create_task(get(flights, "k", compute))
        await asyncio.sleep(0)
        leader.cancel()  # the launching client disconnects
        with pytest.raises(asyncio.CancelledError):
            await leader
        compute.release.set()
        assert await follower == "v"
        assert compute.runs == 1 and compute.finished

    run(main())


def test_the_computation_is_withdrawn_when_every_waiter_left() -> None:
    async def main() -> None:
        flights: InFlight[str, str] = InFlight()
        compute = Computation(["v"])
        waiters = [asyncio.create_task(get(flights, "k", compute)) for _ in range(3)]
        await asyncio.sleep(0)
        for w in waiters[:2]:
            w.cancel()
        await asyncio.gather(*waiters[:2], return_exceptions=True)
        await asyncio.sleep(0)
        assert not compute.cancelled and len(flights) == 1  # one waiter is left: the work goes on
        waiters[2].cancel()
        assert len(flights) == 0 or not waiters[2].done()
        await asyncio.gather(waiters[2], return_exceptions=True)
        assert len(flights) == 0, "the keys are released as the last waiter leaves"
        await asyncio.sleep(0)
        assert compute.cancelled and not compute.finished
        again = Computation(["fresh"])  # the next request launches afresh, never joins the dying flight
        again.release.set()
        assert await get(flights, "k", again) == "fresh"

    run(main())


def test_every_wait_ends_by_its_own_deadline() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        flights: InFlight[str, str] = InFlight()
        compute = Computation(["v"])  # never released while the waiters wait
        started = loop.time()
        waiters = [asyncio.create_task(get(flights, "k", compute, started + d)) for d in (0.05, 0.15)]
        outcomes = await asyncio.gather(*waiters, return_exceptions=True)
        assert all(isinstance(o, TimeoutError) for o in outcomes)
        assert 0.14 <= loop.time() - started < 1.0
        await asyncio.sleep(0)
        assert compute.cancelled and len(flights) == 0  # both deadlines passed: nobody wants it
        assert not await settle([loop.create_future()], loop.time() - 1)  # past deadline: no wait at all

    run(main())


def test_a_failure_nobody_waits_for_is_not_reported_as_unretrieved() -> None:
    reported: list[dict[str, Any]] = []

    async def fails() -> list[str]:
        await asyncio.sleep(0.01)
        raise RuntimeError("boom")  # fresh: nothing but the future keeps it alive

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: reported.append(ctx))
        flights: InFlight[str, str] = InFlight()
        waiter = asyncio.create_task(get(flights, "k", fails))
        await asyncio.sleep(0)
        waiter.cancel()  # the only client leaves before the computation fails
        await asyncio.gather(waiter, return_exceptions=True)
        del waiter
        await asyncio.sleep(0.05)
        gc.collect()  # an unretrieved exception is reported when its future is collected

    run(main())
    assert reported == []


def test_a_finished_flight_leaves_nothing_behind() -> None:
    """Every way a flight ends (a value, an error, withdrawn by its last waiter, cancelled before
    it ran) drops its bookkeeping: the futures, task, values and flight are freed, not kept by
    the flight table for the life of the process."""
    from gateway import coalesce

    async def main() -> None:
        flights: InFlight[str, str] = InFlight()
        ok, bad, left = Computation(["v"]), Computation(["v"], ValueError("bad")), Computation(["v"])
        ok.release.set()
        bad.release.set()
        assert await get(flights, "ok", ok) == "v"
        with pytest.raises(ValueError):
            await get(flights, "bad", bad)
        with pytest.raises(TimeoutError):
            await get(flights, "left", left, deadline=asyncio.get_running_loop().time() + 0.05)
        flights.launch(["never"], Computation(["v"]))  # its task is cancelled before it first runs
        for task in list(flights._tasks):
            task.cancel()
        await asyncio.sleep(0.01)
        assert not flights._tasks and len(flights) == 0
        assert coalesce._FLIGHTS == {}

    run(main())
    gc.collect()
    # type(), not isinstance: isinstance reads __class__, which warns on a deprecated torch object
    assert not [o for o in gc.get_objects() if type(o) is coalesce.Flight]


class Bounded(Computation):
    """A computation that ends itself (failing) at its deadline, as the router does."""

    def __init__(self, deadline: float) -> None:
        super().__init__(["v"])
        self.deadline = deadline

    async def __call__(self) -> list[str]:
        self.runs += 1
        loop = asyncio.get_running_loop()
        await asyncio.sleep(self.deadline - loop.time())
        raise TimeoutError("the computation's own deadline")


def test_a_waiter_no_later_than_its_computation_s_deadline_sets_no_timer() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        flights: InFlight[str, str] = InFlight()
        deadline = loop.time() + 0.1
        compute = Bounded(deadline)
        (future,) = flights.launch(["k"], compute, deadline)
        waiter = asyncio.create_task(settle([future], deadline + 5))
        await asyncio.sleep(0.01)
        timers = len(loop._scheduled)  # type: ignore[attr-defined]  # the computation's own sleep only
        assert timers == 1
        assert await waiter  # ended when the computation did, with its error
        with pytest.raises(TimeoutError, match="own deadline"):
            future.result()

    run(main())


def test_a_waiter_with_an_earlier_deadline_than_its_computation_still_ends_by_its_own() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        flights: InFlight[str, str] = InFlight()
        started = loop.time()
        (future,) = flights.launch(["k"], Bounded(started + 5), started + 5)
        assert not await settle([future], started + 0.05)
        assert loop.time() - started < 1.0
        await asyncio.sleep(0)
        assert len(flights) == 0  # its only waiter left: withdrawn

    run(main())
