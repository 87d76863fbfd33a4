"""gateway/lending.py through the router: which parts carry idle workers' cores (``spare_cores``)
on their way to a worker, and which never do."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from appliance.protocol import BACKGROUND, INTERACTIVE, ModelInfo, Ready
from gateway.lending import IDLE_BEFORE_LENDING_S
from gateway.router import Router
from scripted_workers import DIM, ScriptedWorkers, deadline, make_router

CPU_SLOTS = [("cpu", [0]), ("cpu", [1]), ("cpu", [2, 3])]


def lending_router(workers: ScriptedWorkers, slots: list[tuple[str, list[int]]], **settings: Any) -> Router:
    """``make_router`` whose workers said, in their Ready, the device and cores of ``slots``, and
    have been idle long enough to lend them."""
    router = make_router(workers, **{"lend_idle_cores": True, **settings})
    for i, (device, cores) in enumerate(slots):
        router.worker_ready(i, Ready(i, 100 + i, [ModelInfo("m", "transformer", DIM, 512)], device=device,
                                     cores=cores))  # fmt: skip
    idle_for(router, 1.0)
    return router


def idle_for(router: Router, seconds: float) -> None:
    """As if every worker's last part had left ``seconds`` ago."""
    for worker in router.workers_state:
        worker.idle_since = time.monotonic() - seconds


def send(router: Router, texts: list[str], priority: int = INTERACTIVE) -> asyncio.Future[Any]:
    return asyncio.ensure_future(router.embed("m", texts, truncate=True, deadline=deadline(), priority=priority))


def loans(workers: ScriptedWorkers) -> list[tuple[int, list[int]]]:
    """(worker, spare_cores) of every record sent, in order."""
    return [(w, list(m.spare_cores)) for w, m in workers.records]


def test_a_lone_part_borrows_every_other_cpu_worker_s_cores() -> None:
    async def main() -> None:
        workers = ScriptedWorkers(workers=3)
        router = lending_router(workers, CPU_SLOTS)
        await send(router, ["alone"])
        assert loans(workers) == [(0, [1, 2, 3])]

    asyncio.run(main())


def test_a_second_part_outstanding_anywhere_lends_nothing() -> None:
    async def main() -> None:
        workers = ScriptedWorkers(workers=3, answer=False)
        router = lending_router(workers, CPU_SLOTS)
        first, second = send(router, ["first"]), send(router, ["second"])
        await asyncio.sleep(0.01)
        # the first found every worker idle; the second, another worker busy with the first, and
        # queues behind it: the idle-looking workers' cores compute the first
        assert loans(workers) == [(0, [1, 2, 3]), (0, [])]
        for task in (first, second):
            task.cancel()

    asyncio.run(main())


def test_a_part_arriving_during_a_loan_queues_behind_it_instead_of_sharing_a_lent_core() -> None:
    async def main() -> None:
        workers = ScriptedWorkers(workers=2, answer=False)
        router = lending_router(workers, CPU_SLOTS[:2])
        first = send(router, ["alone"])
        await asyncio.sleep(0.01)
        assert router.workers_state[1].lent is not None
        second = send(router, ["during the loan"])
        await asyncio.sleep(0.01)
        workers.reply(*workers.records[0])  # the lent pass ends: worker 1's core is its own again
        await first
        assert router.workers_state[1].lent is None
        third = send(router, ["while the second computes"])
        await asyncio.sleep(0.01)
        assert loans(workers) == [(0, [1]), (0, []), (1, [])]
        for task in (second, third):
            task.cancel()

    asyncio.run(main())


def test_a_worker_busy_with_a_background_part_lends_nothing_and_background_parts_borrow_nothing() -> None:
    async def main() -> None:
        workers = ScriptedWorkers(workers=2, answer=False)
        router = lending_router(workers, CPU_SLOTS[:2])
        job = send(router, ["a job chunk"], priority=BACKGROUND)
        await asyncio.sleep(0.01)
        interactive = send(router, ["interactive"])
        await asyncio.sleep(0.01)
        assert loans(workers) == [(0, []), (1, [])]
        for task in (job, interactive):
            task.cancel()

    asyncio.run(main())


def test_gpu_workers_neither_borrow_nor_lend() -> None:
    async def main() -> None:
        workers = ScriptedWorkers(workers=2)
        router = lending_router(workers, [("cuda:0", [0]), ("cpu", [1])])
        await send(router, ["to the gpu"])  # worker 0: the least loaded, first
        workers.records.clear()
        router.workers_state[0].outstanding_tokens = 10**6  # steer the next part to the CPU worker
        await send(router, ["to the cpu"])
        assert loans(workers) == [(1, [])]

    asyncio.run(main())


def test_a_request_cut_into_several_parts_borrows_nothing() -> None:
    async def main() -> None:
        workers = ScriptedWorkers(workers=2)
        router = lending_router(workers, CPU_SLOTS[:2])
        await send(router, [f"text {i}" for i in range(64)])  # 64 inputs: spread over both holders
        assert sorted(loans(workers)) == [(0, []), (1, [])]

    asyncio.run(main())


def test_a_worker_that_is_not_up_lends_nothing_and_a_resent_part_carries_no_old_loan() -> None:
    async def main() -> None:
        workers = ScriptedWorkers(workers=3, answer=False)
        router = lending_router(workers, CPU_SLOTS)
        router.worker_unavailable(2)  # draining, or loading its model again: its cores are not idle
        task = send(router, ["alone"])
        await asyncio.sleep(0.01)
        assert loans(workers) == [(0, [1])]
        router.worker_lost(0, "was killed")  # resent to worker 1, which lent its core a moment ago
        (_, resent), = workers.records[1:]
        assert resent.spare_cores == []
        assert all(worker.lent is None for worker in router.workers_state)
        workers.reply(1, resent)
        await task

    asyncio.run(main())


def test_lend_idle_cores_false_lends_nothing() -> None:
    async def main() -> None:
        workers = ScriptedWorkers(workers=3)
        router = lending_router(workers, CPU_SLOTS, lend_idle_cores=False)
        await send(router, ["alone"])
        assert loans(workers) == [(0, [])]

    asyncio.run(main())


def test_workers_sharing_the_chosen_worker_s_cores_lend_none_of_them() -> None:
    async def main() -> None:
        workers = ScriptedWorkers(workers=3)
        router = lending_router(workers, [("cpu", [0]), ("cpu", [0]), ("cpu", [1])])  # more slots than cores
        await send(router, ["alone"])
        assert loans(workers) == [(0, [1])]

    asyncio.run(main())


def test_a_worker_that_computed_a_moment_ago_lends_nothing_until_it_has_idled() -> None:
    async def main() -> None:
        workers = ScriptedWorkers(workers=2)
        router = lending_router(workers, CPU_SLOTS[:2])
        router.workers_state[0].outstanding_tokens = 10**6  # steer the first request to worker 1
        await send(router, ["to worker 1"])
        router.workers_state[0].outstanding_tokens = 0
        await send(router, ["just after"])  # worker 1 answered a moment ago: two at a time, perhaps
        idle_for(router, IDLE_BEFORE_LENDING_S)
        await send(router, ["after a pause"])
        assert loans(workers) == [(1, [0]), (0, []), (0, [1])]

    asyncio.run(main())
