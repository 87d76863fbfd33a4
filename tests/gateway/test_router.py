"""gateway/router.py with scripted workers: slicing to fit the rings, least-loaded routing, resend,
and background parts kept below interactive ones (gateway/priority.py's rules).

``ScriptedWorkers`` (``scripted_workers.py``) stands in for the worker link.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from appliance.protocol import BACKGROUND, INTERACTIVE, ModelInfo, Ready, SlotStatus, Stats, WorkerCounters
from gateway import errors
from gateway.router import Router
from scripted_workers import DIM, RING, ScriptedWorkers, deadline, make_router


def test_many_long_texts_are_cut_into_records_that_fit_and_come_back_in_order() -> None:
    async def main() -> None:
        workers = ScriptedWorkers()
        router = make_router(workers)
        texts = [("x" * (1000 + i)) for i in range(100)]  # ~105 kB: more than three 32 kB records
        outcome = await router.embed("m", texts, truncate=True, deadline=deadline())
        assert len(workers.records) >= 4
        assert outcome.vectors[:, 0].tolist() == [float(len(t)) for t in texts]
        assert {w for w, _ in workers.records} == {0, 1}  # both workers took parts

    asyncio.run(main())


def test_non_ascii_text_is_budgeted_by_its_utf8_size() -> None:
    async def main() -> None:
        workers = ScriptedWorkers(1)
        router = make_router(workers)
        texts = ["ü" * 3000] * 12  # 6 kB each in UTF-8 though 3000 characters
        outcome = await router.embed("m", texts, truncate=True, deadline=deadline())
        assert len(outcome.vectors) == 12 and len(workers.records) >= 3

    asyncio.run(main())


def test_one_input_larger_than_a_record_is_413_and_nothing_is_sent() -> None:
    async def main() -> None:
        workers = ScriptedWorkers()
        router = make_router(workers)
        with pytest.raises(errors.BodyTooLarge, match="ring_bytes"):
            await router.embed("m", ["y" * RING], truncate=True, deadline=deadline())
        assert workers.records == [] and router.outstanding() == 0

    asyncio.run(main())


def test_small_requests_go_to_the_least_loaded_worker() -> None:
    async def main() -> None:
        workers = ScriptedWorkers(answer=False)
        router = make_router(workers)
        pending = [asyncio.ensure_future(router.embed("m", [f"text {i}"], truncate=True, deadline=deadline()))
                   for i in range(6)]  # fmt: skip
        await asyncio.sleep(0.01)
        assert sorted(w for w, _ in workers.records) == [0, 0, 0, 1, 1, 1]
        for worker, message in workers.records:
            workers.reply(worker, message)
        assert [len(o.vectors) for o in await asyncio.gather(*pending)] == [1] * 6

    asyncio.run(main())


def test_a_lost_worker_s_parts_are_resent_once_to_another_holder() -> None:
    async def main() -> None:
        workers = ScriptedWorkers(answer=False)
        router = make_router(workers)
        task = asyncio.ensure_future(router.embed("m", ["only"], truncate=True, deadline=deadline()))
        await asyncio.sleep(0.01)
        (first, message), = workers.records
        router.worker_lost(first, "was killed")
        (second, resent), = workers.records[1:]
        assert second != first and resent.id == message.id
        workers.reply(second, resent)
        outcome = await task
        assert outcome.workers == str(second)

    asyncio.run(main())


def test_a_part_lost_twice_fails_with_503_not_a_hang() -> None:
    async def main() -> None:
        workers = ScriptedWorkers(answer=False)
        router = make_router(workers)
        task = asyncio.ensure_future(router.embed("m", ["only"], truncate=True, deadline=deadline()))
        await asyncio.sleep(0.01)
        router.worker_lost(workers.records[0][0], "was killed")
        router.worker_lost(workers.records[1][0], "was killed")
        with pytest.raises(errors.WorkerLost):
            await asyncio.wait_for(task, 2)

    asyncio.run(main())


def test_every_part_carries_the_deadline_on_the_shared_monotonic_clock() -> None:
    async def main() -> None:
        workers = ScriptedWorkers()
        router = make_router(workers)
        await router.embed("m", ["a"], truncate=True, deadline=deadline(7.0))
        (_, message), = workers.records
        assert message.deadline == pytest.approx(time.monotonic() + 7.0, abs=0.5)

    asyncio.run(main())


def test_a_part_past_its_deadline_is_withdrawn_from_its_worker() -> None:
    async def main() -> None:
        workers = ScriptedWorkers(answer=False)
        router = make_router(workers)
        with pytest.raises(errors.DeadlineExceeded):
            await router.embed("m", ["slow"], truncate=True, deadline=deadline(0.1))
        (worker, message), = workers.records
        assert workers.cancels == [(worker, message.id)] and router.outstanding() == 0

    asyncio.run(main())


def test_one_sweep_fails_each_part_at_its_own_deadline_and_stops_when_none_is_out() -> None:
    async def main() -> None:
        workers = ScriptedWorkers(answer=False)
        router = make_router(workers)
        loop = asyncio.get_running_loop()
        short = [asyncio.ensure_future(router.embed("m", [f"short {i}"], truncate=True, deadline=deadline(0.1)))
                 for i in range(5)]  # fmt: skip
        long = asyncio.ensure_future(router.embed("m", ["long"], truncate=True, deadline=deadline(0.6)))
        await asyncio.sleep(0.01)
        assert len(loop._scheduled) == 1, "one timer for every part in flight, not one per request"  # type: ignore[attr-defined]
        started = loop.time()
        for task in short:
            with pytest.raises(errors.DeadlineExceeded):
                await task
        assert loop.time() - started < 0.3 and not long.done()
        short_ids = {message.id for _, message in workers.records if message.inputs[0].startswith("short")}
        assert {part_id for _, part_id in workers.cancels} == short_ids  # each withdrawn from its worker
        with pytest.raises(errors.DeadlineExceeded):
            await long
        assert router.outstanding() == 0 and len(workers.cancels) == 6
        await asyncio.sleep(0.05)
        assert router.sweep is None and not loop._scheduled  # type: ignore[attr-defined]

    asyncio.run(main())


def test_a_request_cut_into_parts_fails_whole_at_its_deadline_and_withdraws_every_part() -> None:
    async def main() -> None:
        workers = ScriptedWorkers(answer=False)
        router = make_router(workers)
        texts = [("x" * (1000 + i)) for i in range(100)]  # several records over both workers
        with pytest.raises(errors.DeadlineExceeded):
            await router.embed("m", texts, truncate=True, deadline=deadline(0.1))
        assert len(workers.records) >= 4
        assert sorted(workers.cancels) == sorted((w, m.id) for w, m in workers.records)
        assert router.outstanding() == 0

    asyncio.run(main())


def test_a_client_that_leaves_withdraws_its_part() -> None:
    async def main() -> None:
        workers = ScriptedWorkers(answer=False)
        router = make_router(workers)
        task = asyncio.ensure_future(router.embed("m", ["bye"], truncate=True, deadline=deadline()))
        await asyncio.sleep(0.01)
        task.cancel()  # aiohttp cancels the handler when its client disconnects
        await asyncio.gather(task, return_exceptions=True)
        assert workers.cancels == [(workers.records[0][0], workers.records[0][1].id)]

    asyncio.run(main())


def test_a_request_waits_for_a_respawning_holder_instead_of_failing() -> None:
    async def main() -> None:
        workers = ScriptedWorkers(1)
        router = make_router(workers)
        router.worker_lost(0, "was killed")
        assert router.is_ready(), "a respawn does not make the appliance unready"
        task = asyncio.ensure_future(router.embed("m", ["patient"], truncate=True, deadline=deadline()))
        await asyncio.sleep(0.2)
        assert not task.done() and workers.records == []
        router.worker_ready(0, Ready(0, 200, [ModelInfo("m", "transformer", DIM, 512)]))
        outcome = await asyncio.wait_for(task, 2)
        assert outcome.workers == "0"

    asyncio.run(main())


def test_no_holder_coming_back_is_503_by_the_deadline() -> None:
    async def main() -> None:
        workers = ScriptedWorkers(1)
        router = make_router(workers)
        router.worker_lost(0, "was killed")
        with pytest.raises((errors.NotReady, errors.DeadlineExceeded)):
            await router.embed("m", ["alone"], truncate=True, deadline=deadline(0.3))

    asyncio.run(main())


def test_a_lost_part_with_no_other_holder_waits_for_the_respawn() -> None:
    async def main() -> None:
        workers = ScriptedWorkers(1, answer=False)
        router = make_router(workers)
        task = asyncio.ensure_future(router.embed("m", ["in flight"], truncate=True, deadline=deadline()))
        await asyncio.sleep(0.01)
        router.worker_lost(0, "was killed")
        await asyncio.sleep(0.05)
        assert not task.done() and len(workers.records) == 1
        router.worker_ready(0, Ready(0, 300, [ModelInfo("m", "transformer", DIM, 512)]))
        (worker, resent), = workers.records[1:]
        assert resent.id == workers.records[0][1].id
        workers.reply(worker, resent)
        assert len((await asyncio.wait_for(task, 2)).vectors) == 1

    asyncio.run(main())


def test_a_parked_part_past_its_deadline_is_504_and_forgotten() -> None:
    async def main() -> None:
        workers = ScriptedWorkers(1, answer=False)
        router = make_router(workers)
        task = asyncio.ensure_future(router.embed("m", ["in flight"], truncate=True, deadline=deadline(0.3)))
        await asyncio.sleep(0.01)
        router.worker_lost(0, "was killed")
        with pytest.raises(errors.DeadlineExceeded):
            await task
        assert router.parked == {}

    asyncio.run(main())


# ---- requests parked while no worker holds their model ------------------------------------------
def holder_down(answer: bool = True, **settings: Any) -> Router:
    """A router whose only worker (the only holder of "m") was just lost: requests park."""
    router = make_router(ScriptedWorkers(1, answer=answer), **settings)
    router.worker_lost(0, "was killed")
    return router


def ready_again(router: Router, worker: int = 0) -> None:
    router.worker_ready(worker, Ready(worker, 400 + worker, [ModelInfo("m", "transformer", DIM, 512)]))


def test_parked_requests_wake_on_the_holder_s_ready_not_on_a_poll() -> None:
    """Every waiter resumes within the loop iterations after ``worker_ready``, far below the old
    50 ms poll, and no waiter wakes before it (nothing polls while the holder is down)."""

    async def main() -> None:
        router = holder_down(answer=False)
        loop = asyncio.get_running_loop()
        woke: list[float] = []

        async def request(i: int) -> None:
            await router.holders("m", deadline())
            woke.append(loop.time())

        looks = 0
        up_holders = router.up_holders

        def counting(model: str) -> list[Any]:
            nonlocal looks
            looks += 1
            return up_holders(model)

        router.up_holders = counting  # type: ignore[method-assign]
        waiters = [asyncio.ensure_future(request(i)) for i in range(20)]
        await asyncio.sleep(0.01)
        parked_looks = looks
        await asyncio.sleep(0.13)  # past two of the old 50 ms polls
        assert woke == [] and router.holder_wait.waiting == 20
        assert looks == parked_looks, "a parked request looked again without a Ready: polling"
        at = loop.time()
        ready_again(router)
        await asyncio.wait_for(asyncio.gather(*waiters), 1.0)
        assert len(woke) == 20 and max(woke) - at < 0.01
        assert router.holder_wait.waiting == 0 and router.holder_wait.events == {}

    asyncio.run(main())


def test_past_max_parked_requests_a_request_gets_429_with_retry_after() -> None:
    async def main() -> None:
        router = holder_down(max_parked_requests=3)
        parked = [start(router, [f"parked {i}"]) for i in range(3)]
        await asyncio.sleep(0.01)
        with pytest.raises(errors.QueueFull, match="max_parked_requests") as refused:
            await router.embed("m", ["one too many"], truncate=True, deadline=deadline())
        assert refused.value.retry_after and refused.value.retry_after > 0
        background = start(router, ["job chunk"], priority=BACKGROUND)  # bounded by the job runner, not here
        await asyncio.sleep(0.01)
        assert not background.done() and router.holder_wait.waiting == 3
        ready_again(router)
        assert [len(o.vectors) for o in await asyncio.wait_for(asyncio.gather(*parked, background), 2)] == [1] * 4
        assert router.holder_wait.waiting == 0
        await router.embed("m", ["room again"], truncate=True, deadline=deadline())

    asyncio.run(main())


def test_a_parked_request_is_503_at_its_deadline_and_frees_its_place() -> None:
    async def main() -> None:
        router = holder_down(max_parked_requests=1)
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(errors.NotReady, match="within the request's deadline"):
            await router.embed("m", ["patient"], truncate=True, deadline=deadline(0.2))
        assert 0.2 <= loop.time() - began < 0.3
        assert router.holder_wait.waiting == 0
        cancelled = start(router, ["client leaves"])  # a client that disconnects frees its place too
        await asyncio.sleep(0.01)
        cancelled.cancel()
        await asyncio.gather(cancelled, return_exceptions=True)
        assert router.holder_wait.waiting == 0
        waiting = start(router, ["next"])
        await asyncio.sleep(0.01)
        ready_again(router)
        assert len((await asyncio.wait_for(waiting, 2)).vectors) == 1

    asyncio.run(main())


# ---- background parts ---------------------------------------------------------------------------
def start(router: Router, texts: list[str], priority: int = INTERACTIVE, seconds: float = 5.0) -> asyncio.Future[Any]:
    return asyncio.ensure_future(router.embed("m", texts, truncate=True, deadline=deadline(seconds), priority=priority))


def sent(workers: ScriptedWorkers) -> list[tuple[int, int, list[str]]]:
    """(worker, priority, inputs) of every record sent, in order."""
    return [(w, m.priority, list(m.inputs)) for w, m in workers.records]


async def records(workers: ScriptedWorkers, count: int) -> list[tuple[int, int, list[str]]]:
    """``sent`` once ``count`` records are out: a woken sender goes on at the event loop's next
    turns, not at once (``Router.wait_for_change``)."""
    for _ in range(100):
        if len(workers.records) >= count:
            break
        await asyncio.sleep(0.01)
    return sent(workers)


def test_one_background_part_per_worker_at_a_time_the_rest_wait_here() -> None:
    async def main() -> None:
        workers = ScriptedWorkers(answer=False)
        router = make_router(workers)
        jobs = [start(router, [f"chunk {i}"], BACKGROUND) for i in range(3)]
        await asyncio.sleep(0.01)
        assert sent(workers) == [(0, BACKGROUND, ["chunk 0"]), (1, BACKGROUND, ["chunk 1"])]  # one each
        assert not any(job.done() for job in jobs)  # the third waits on the event loop, not in a ring
        workers.reply(*workers.records[1])  # worker 1's slot frees: the waiting chunk takes it
        assert (await records(workers, 3))[2] == (1, BACKGROUND, ["chunk 2"])
        for worker, message in workers.records[::2]:
            workers.reply(worker, message)
        assert [len(o.vectors) for o in await asyncio.gather(*jobs)] == [1, 1, 1]
        assert router.outstanding() == 0 and all(w.background is None for w in router.workers_state)

    asyncio.run(main())


def test_interactive_parts_are_not_blocked_by_waiting_background_parts() -> None:
    async def main() -> None:
        workers = ScriptedWorkers(1, answer=False)
        router = make_router(workers)
        jobs = [start(router, [f"chunk {i}"], BACKGROUND) for i in range(2)]
        await asyncio.sleep(0.01)
        query = start(router, ["a question"])
        await asyncio.sleep(0.01)
        # sent at once, ahead of the waiting chunk: behind at most the one chunk in flight
        assert sent(workers) == [(0, BACKGROUND, ["chunk 0"]), (0, INTERACTIVE, ["a question"])]
        workers.reply(*workers.records[1])
        assert len((await query).vectors) == 1 and not jobs[1].done()
        workers.reply(*workers.records[0])
        assert (await records(workers, 3))[2] == (0, BACKGROUND, ["chunk 1"])
        workers.reply(*workers.records[2])
        await asyncio.gather(*jobs)

    asyncio.run(main())


def test_interactive_work_is_routed_away_from_a_worker_busy_with_a_background_part() -> None:
    async def main() -> None:
        workers = ScriptedWorkers(answer=False)
        router = make_router(workers)
        job = start(router, ["chunk"], BACKGROUND)
        await asyncio.sleep(0.01)
        queries = [start(router, [f"question {i}"]) for i in range(2)]
        await asyncio.sleep(0.01)
        # worker 0 holds the chunk: the first question goes to worker 1 (no interactive work on
        # either: the tie goes to less work in all); the second to worker 0, whose chunk runs
        # below it, rather than behind the first question
        assert [w for w, _, _ in sent(workers)] == [0, 1, 0]
        for worker, message in list(workers.records):
            workers.reply(worker, message)
        await asyncio.gather(job, *queries)

    asyncio.run(main())


def test_a_background_part_waits_for_room_instead_of_429_and_takes_none_from_interactive_work() -> None:
    async def main() -> None:
        workers = ScriptedWorkers(1, answer=False)
        router = make_router(workers, max_pending_inputs=4)
        first = start(router, ["q1", "q2", "q3"])
        await asyncio.sleep(0.01)
        job = start(router, ["c1", "c2"], BACKGROUND)  # 3 + 2 > 4: waits, no 429
        await asyncio.sleep(0.1)
        assert len(workers.records) == 1 and not job.done()
        with pytest.raises(errors.QueueFull):  # interactive work over the limit is still refused
            await router.embed("m", ["q4", "q5"], truncate=True, deadline=deadline())
        workers.reply(*workers.records[0])
        await first
        assert (await records(workers, 2))[1] == (0, BACKGROUND, ["c1", "c2"])
        # the chunk's 2 inputs do not count against interactive work: 4 more interactive fit
        second = start(router, ["q6", "q7", "q8", "q9"])
        await asyncio.sleep(0.01)
        assert sent(workers)[2] == (0, INTERACTIVE, ["q6", "q7", "q8", "q9"])
        for worker, message in workers.records[1:]:
            workers.reply(worker, message)
        await asyncio.gather(job, second)

    asyncio.run(main())


def test_a_waiting_background_part_past_its_deadline_is_504_and_never_sent() -> None:
    async def main() -> None:
        workers = ScriptedWorkers(1, answer=False)
        router = make_router(workers)
        busy = start(router, ["chunk 0"], BACKGROUND)
        await asyncio.sleep(0.01)
        with pytest.raises(errors.DeadlineExceeded):
            await router.embed("m", ["chunk 1"], truncate=True, deadline=deadline(0.2), priority=BACKGROUND)
        assert len(workers.records) == 1
        workers.reply(*workers.records[0])
        await busy

    asyncio.run(main())


def test_a_lost_background_part_is_resent_only_into_a_free_slot() -> None:
    async def main() -> None:
        workers = ScriptedWorkers(answer=False)
        router = make_router(workers)
        jobs = [start(router, [f"chunk {i}"], BACKGROUND) for i in range(2)]
        await asyncio.sleep(0.01)
        router.worker_lost(0, "was killed")
        assert len(workers.records) == 2 and list(router.parked) == [workers.records[0][1].id]
        workers.reply(*workers.records[1])  # worker 1's slot frees: the parked chunk takes it
        assert sent(workers)[2] == (1, BACKGROUND, ["chunk 0"])
        workers.reply(*workers.records[2])
        assert [o.workers for o in await asyncio.gather(*jobs)] == ["1", "1"]

    asyncio.run(main())


# ---- worker cards ------------------------------------------------------------------------------
class FixedClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_worker_card_joins_the_slot_status_the_worker_s_counters_and_its_busy_share() -> None:
    router = make_router(ScriptedWorkers())
    clock = FixedClock(50.0)
    router.workers_state[0].busy.clock = clock
    router.worker_status(0, SlotStatus(role="primary", device="cuda:0", cores=(0, 1), state="ready",
                                       restarts={"crash": 1}))  # fmt: skip
    for compute_us in (0, 250_000, 500_000):  # busy a quarter of each second
        router.worker_stats(0, Stats(0, 100, WorkerCounters(batches=3, compute_us=compute_us,
                                                            batch_size_counts=[1, 2, 3])))  # fmt: skip
        clock.now += 1.0
    card, other = router.workers()
    assert (card.role, card.device, card.cores, card.state, card.restarts) == (
        "primary", "cuda:0", [0, 1], "ready", {"crash": 1})
    assert (card.batches, card.batch_size_counts, card.pid) == (3, [1, 2, 3], 100)
    assert card.busy_share == round(0.5 / 3, 6)  # 0.5 s busy of the 3 s since the first report
    # a slot the supervisor has not described yet, with no Stats: the defaults
    assert (other.role, other.state, other.restarts, other.busy_share, other.batches) == ("", "", {}, 0.0, 0)


def test_a_card_never_shows_the_counters_of_the_incarnation_before_a_respawn() -> None:
    router = make_router(ScriptedWorkers())
    router.worker_stats(1, Stats(1, 101, WorkerCounters(batches=7)))
    assert router.workers()[1].batches == 7
    router.worker_lost(1, "killed by SIGKILL")
    router.worker_ready(1, Ready(1, 555, [ModelInfo("m", "transformer", DIM, 512)]))
    assert (router.workers()[1].pid, router.workers()[1].batches) == (555, 0)  # until the new one reports
