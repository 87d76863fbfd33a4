"""gateway/router.py on a full request ring: a waiting part goes on the worker's room signal
(``Room``), on a worker going down or away, or at its bound; it never polls for ring space.

``RingsThatFill`` scripts the link: a worker's ring refuses records until the test gives it room,
as the real channel does until its worker drains (tests/appliance/test_channel.py covers that).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from appliance.protocol import BACKGROUND, INTERACTIVE, Cancel, ModelInfo, Ready, Room
from gateway import errors, router as router_module
from gateway.router import Router
from scripted_workers import DIM, ScriptedWorkers, deadline, make_router

QUIET_S = 0.3  # long enough for six 50 ms polls, had the wait polled
TRIES = 2  # a part refused by a full ring: the send in run_parts, then dispatch's first, then it sleeps


class RingsThatFill(ScriptedWorkers):
    """Each worker's ring takes ``room[worker]`` more records, then refuses until ``make_room``."""

    def __init__(self, workers: int = 1, room: int = 0, answer: bool = True) -> None:
        super().__init__(workers, answer)
        self.room = dict.fromkeys(range(workers), room)
        self.refused = dict.fromkeys(range(workers), 0)

    def send_record(self, worker: int, record: bytes) -> bool:
        if isinstance(self.codec.decode(record), Cancel):
            return super().send_record(worker, record)
        if not self.room[worker]:
            self.refused[worker] += 1
            return False
        self.room[worker] -= 1
        return super().send_record(worker, record)

    def make_room(self, worker: int, records: int) -> None:
        """The worker drained its ring: ``records`` fit now, and it rings its room signal."""
        self.room[worker] = records
        self.deliver(worker, Room())


def start(router: Router, text: str, priority: int = INTERACTIVE) -> asyncio.Future[Any]:
    return asyncio.ensure_future(router.embed("m", [text], truncate=True, deadline=deadline(), priority=priority))


def test_a_part_waiting_on_a_full_ring_tries_once_and_goes_on_the_room_signal() -> None:
    async def main() -> None:
        workers = RingsThatFill()
        router = make_router(workers)
        waiting = start(router, "waits")
        await asyncio.sleep(QUIET_S)
        assert workers.refused[0] == TRIES and not waiting.done()  # then asleep: no poll
        workers.make_room(0, 1)
        assert (await asyncio.wait_for(waiting, 1.0)).vectors[:, 0].tolist() == [5.0]
        assert workers.refused[0] == TRIES
        card = router.workers()[0]
        assert (card.ring_full, card.room_signals) == (TRIES, 1)

    asyncio.run(main())


def test_several_parts_waiting_on_one_ring_go_as_room_allows_in_their_order() -> None:
    async def main() -> None:
        workers = RingsThatFill(answer=False)  # no result wakes them: only the room signals
        router = make_router(workers)
        texts = ["first", "second", "third"]
        waiting = [start(router, text) for text in texts]
        await asyncio.sleep(0.05)
        assert workers.refused[0] == 3 * TRIES
        workers.make_room(0, 2)  # every waiter wakes: two fit, the third asks again
        await asyncio.sleep(0.05)
        assert [list(m.inputs) for _, m in workers.records] == [["first"], ["second"]]
        assert workers.refused[0] == 3 * TRIES + 1 and not waiting[2].done()
        workers.make_room(0, 1)
        await asyncio.sleep(0.05)
        assert [list(m.inputs) for _, m in workers.records][2] == ["third"]
        for worker, message in workers.records:
            workers.reply(worker, message)
        answers = await asyncio.wait_for(asyncio.gather(*waiting), 1.0)
        assert [a.vectors[0, 0] for a in answers] == [float(len(t)) for t in texts]
        assert router.workers()[0].room_signals == 2

    asyncio.run(main())


def test_with_no_room_an_interactive_part_gets_429_at_its_bound_having_tried_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(router_module, "FULL_RING_WAIT_S", 0.2)

    async def main() -> None:
        workers = RingsThatFill()
        router = make_router(workers)
        with pytest.raises(errors.QueueFull, match="ring full") as refused:
            await asyncio.wait_for(start(router, "refused"), 2.0)
        assert refused.value.retry_after and workers.refused[0] == TRIES + 1  # a last look at the bound
        assert router.outstanding() == 0

    asyncio.run(main())


def test_a_background_part_waits_past_the_429_bound_for_room() -> None:
    async def main() -> None:
        workers = RingsThatFill()
        router = make_router(workers)
        job = start(router, "chunk", BACKGROUND)
        await asyncio.sleep(QUIET_S)
        assert workers.refused[0] == TRIES and not job.done()
        workers.make_room(0, 1)
        assert len((await asyncio.wait_for(job, 1.0)).vectors) == 1

    asyncio.run(main())


def test_a_worker_lost_while_a_part_waits_on_its_ring_wakes_it_to_wait_for_the_respawn() -> None:
    async def main() -> None:
        workers = RingsThatFill()
        router = make_router(workers)
        waiting = start(router, "waits")
        await asyncio.sleep(0.05)
        router.worker_lost(0, "killed by SIGKILL")  # the supervisor reset its ring: empty
        workers.room[0] = 8
        await asyncio.sleep(0.05)
        assert not waiting.done() and workers.records == []  # waiting for a holder, not for room
        router.worker_ready(0, Ready(0, 200, [ModelInfo("m", "transformer", DIM, 512)]))
        assert len((await asyncio.wait_for(waiting, 1.0)).vectors) == 1
        assert router.workers()[0].room_signals == 0  # the lost worker, not room, woke it

    asyncio.run(main())


def test_a_part_waiting_on_a_full_ring_goes_to_another_holder_when_its_worker_is_taken_out() -> None:
    async def main() -> None:
        workers = RingsThatFill(2)
        workers.room[1] = 8
        router = make_router(workers)
        waiting = start(router, "waits")  # both idle: worker 0 wins the tie, and its ring is full
        await asyncio.sleep(0.05)
        assert workers.refused[0] == TRIES and not waiting.done()
        router.worker_unavailable(0)  # recycled: it takes no new work
        assert len((await asyncio.wait_for(waiting, 1.0)).vectors) == 1
        assert [w for w, _ in workers.records] == [1]

    asyncio.run(main())
