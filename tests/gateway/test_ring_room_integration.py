"""Room in a full request ring, in the real appliance: one real worker on a 64 KiB ring, frozen
with SIGSTOP so that the gateway's sends fill its ring, then thawed. The requests that found the
ring full wait in the router (``FULL_RING_WAIT_S``, then 429) and must go on the worker's room
signal (``appliance/ipc/channel.py``) as soon as it drains: ``/stats`` counts the refused sends
(``ring_full``) and the room signals the gateway heard (``room_signals``) per worker. The
appliance is closed (stopped, SIGKILLed past a bound, segments unlinked) whatever the outcome;
SIGKILL reaches a stopped worker.
"""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest

from harness import Appliance, get, post, serving

pytestmark = pytest.mark.slow

MODEL = "tiny"
RING_BYTES = 64 << 10  # the smallest ring: a record takes at most 28 KiB of it
TEXT_CHARS = 20_000  # one input, one ~20 KiB record: three fill the ring
REQUESTS = 5  # so at least two wait, wherever in the ring the first record lands
SETTINGS = {
    "APPLIANCE_RING_BYTES": str(RING_BYTES),
    "APPLIANCE_CACHE_BYTES": "0",  # every request reaches the worker
    "APPLIANCE_WORKER_TIMEOUT": "120",  # the frozen worker is not replaced meanwhile
}
SEEN_S = 20.0  # for the refusals to show in /stats on a busy box


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory, tiny_transformer: Path) -> Iterator[Appliance]:
    models = [{"name": MODEL, "path": str(tiny_transformer), "main": True}]
    with serving(tmp_path_factory.mktemp("room"), models, workers=1, env=SETTINGS) as running:
        yield running


def worker_card(appliance: Appliance) -> dict[str, Any]:
    status, _, body = get(appliance.url + "/stats")
    assert status == 200
    (card,) = body["workers"]
    return card


def embed(appliance: Appliance, index: int) -> int:
    text = (f"text {index} " + "word " * TEXT_CHARS)[:TEXT_CHARS]
    status, _, _ = post(appliance.url + "/api/embed", {"model": MODEL, "input": [text]}, timeout=60.0)
    return status


def wait_for_refusals(appliance: Appliance, before: int) -> int:
    """Poll /stats until the worker's ring has refused a send; the count."""
    deadline = time.monotonic() + SEEN_S
    while (refused := worker_card(appliance)["ring_full"]) == before:
        assert time.monotonic() < deadline, "no send found the frozen worker's ring full"
        time.sleep(0.01)
    return refused


def test_requests_waiting_on_a_full_ring_go_on_the_worker_room_signal(appliance: Appliance) -> None:
    before = worker_card(appliance)
    pid = before["pid"]
    appliance.worker_pids()  # noted for the orphan check
    os.kill(pid, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(REQUESTS) as pool:
            replies = [pool.submit(embed, appliance, i) for i in range(REQUESTS)]
            wait_for_refusals(appliance, before["ring_full"])
            # thawed within FULL_RING_WAIT_S of the first refusal: the waiters have not given up
            os.kill(pid, signal.SIGCONT)
            statuses = [reply.result(timeout=60.0) for reply in replies]
    finally:
        os.kill(pid, signal.SIGCONT)  # a failed assertion above must not leave it frozen
    after = worker_card(appliance)
    assert statuses == [200] * REQUESTS, f"{statuses}: a waiting request was refused\n{appliance.log_tail()}"
    assert after["pid"] == pid  # the same worker, thawed, not a replacement
    assert after["room_signals"] > before["room_signals"], "the waiters did not hear the worker's room signal"
    # Nothing else wakes a waiter while the worker is frozen (no results, no worker event): each
    # tried twice (its send, then dispatch's) and slept; on the room signal, once more. A poll
    # would have added a try per period for as long as the thaw took.
    waiters = REQUESTS - 2  # at most: wherever the ring's free space starts, two records fit
    assert after["ring_full"] - before["ring_full"] <= 3 * waiters


def test_a_worker_killed_while_requests_wait_on_its_full_ring_wakes_them_for_its_successor(
    appliance: Appliance,
) -> None:
    """The loss wakes the waiters (``worker_lost``), which then wait for a holder instead of for
    room; without that wake they would get 429 after ``FULL_RING_WAIT_S``, long before the
    respawn is up. The parts the dead worker held are resent to its successor."""
    before = worker_card(appliance)
    pid = before["pid"]
    appliance.worker_pids()
    os.kill(pid, signal.SIGSTOP)
    with ThreadPoolExecutor(REQUESTS) as pool:
        replies = [pool.submit(embed, appliance, i) for i in range(REQUESTS)]
        wait_for_refusals(appliance, before["ring_full"])
        os.kill(pid, signal.SIGKILL)
        statuses = [reply.result(timeout=60.0) for reply in replies]
    after = worker_card(appliance)
    assert statuses == [200] * REQUESTS, f"{statuses}\n{appliance.log_tail()}"
    assert after["pid"] != pid and after["restarts"] == {"crash": 1}
    appliance.worker_pids()  # the successor, for the orphan check
