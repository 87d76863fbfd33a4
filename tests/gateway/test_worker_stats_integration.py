"""The worker side of ``GET /stats`` on the real appliance (two real workers, a tiny random model,
cache off): each card's slot (role, device, pinned cores), its supervision state, its batch
histograms as the worker counted them, its busy share, and its respawns by cause after a worker
is SIGKILLed. Worker counters arrive in the workers' Stats about once a second, so every check
waits (bounded) for them to show.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from appliance.protocol import BATCH_SIZE_BOUNDS, BATCH_TOKEN_BOUNDS
from harness import Appliance, assert_clean_exit, get, post

pytestmark = pytest.mark.slow

MODEL = "tiny"
SETTLE_S = 30.0  # bound on any wait for Stats to show a change (about 1 s when the box is idle)
RESPAWN_S = 90.0  # a SIGKILLed worker's back-off, a fresh interpreter and a model load, on two busy cores


def cards(appliance: Appliance) -> dict[int, dict[str, Any]]:
    status, _, body = get(appliance.url + "/stats")
    assert status == 200, body
    appliance.worker_pids()  # the launcher remembers every worker for its orphan check
    return {card["index"]: card for card in body["workers"]}


def wait_for_cards(appliance: Appliance, condition: Callable[[dict[int, dict[str, Any]]], bool], timeout: float,
                   what: str) -> dict[int, dict[str, Any]]:  # fmt: skip
    deadline = time.monotonic() + timeout
    while not condition(seen := cards(appliance)):
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {seen}\n{appliance.log_tail()}"
        time.sleep(0.2)
    return seen


def embed(appliance: Appliance, texts: list[str]) -> None:
    status, _, body = post(appliance.url + "/api/embed", {"model": MODEL, "input": texts})
    assert status == 200, body


def assert_histograms_count_every_batch(card: dict[str, Any]) -> None:
    sizes, tokens = card["batch_size_counts"], card["batch_token_counts"]
    assert len(sizes) == len(BATCH_SIZE_BOUNDS) + 1 and len(tokens) == len(BATCH_TOKEN_BOUNDS) + 1
    assert sizes == sorted(sizes) and tokens == sorted(tokens), "cumulative counts never fall"
    assert sizes[-1] == tokens[-1] == card["batches"]


@pytest.mark.timeout(300)
def test_stats_show_each_worker_s_slot_batches_busy_share_and_a_crash_respawn(
    launch: Callable[..., Appliance], tiny_transformer: Path
) -> None:
    models = [{"name": MODEL, "path": str(tiny_transformer), "main": True}]
    appliance = launch(models, workers=2, env={"APPLIANCE_CACHE_BYTES": "0"})
    allowed = set(os.sched_getaffinity(0))

    # 1. every slot as planned: the primary and a light worker, on the CPU, pinned, ready, never restarted
    before = cards(appliance)
    assert [before[i]["role"] for i in (0, 1)] == ["primary", "light"]
    for card in before.values():
        assert (card["device"], card["state"], card["restarts"], card["gpu_memory_bytes"]) == ("cpu", "ready", {}, 0)
        assert card["cores"] and set(card["cores"]) <= allowed
        assert 0.0 <= card["busy_share"] <= 1.0

    # 2. work moves the histograms: a 64-input request (cut over both workers) and single inputs
    embed(appliance, [f"a sentence for the histograms, number {i}" for i in range(64)])
    for i in range(20):
        embed(appliance, [f"one more sentence {i}"])
    moved = wait_for_cards(appliance, lambda c: sum(w["items"] for w in c.values()) == 84, SETTLE_S,
                           "every input in the workers' Stats")  # fmt: skip
    for card in moved.values():
        assert card["batches"] >= 1
        assert_histograms_count_every_batch(card)
    assert sum(c["batch_size_counts"][0] for c in moved.values()) >= 1  # the single inputs: batches of one
    assert sum(c["batch_size_counts"][-1] - c["batch_size_counts"][0] for c in moved.values()) >= 2  # the 64
    busy = wait_for_cards(appliance, lambda c: any(w["busy_share"] > 0 for w in c.values()), SETTLE_S,
                          "a busy share above 0")  # fmt: skip
    assert all(0.0 <= w["busy_share"] <= 1.0 for w in busy.values())

    # 3. SIGKILL the light worker: the slot comes back ready under a new pid, with one crash counted
    killed = moved[1]["pid"]
    os.kill(killed, signal.SIGKILL)
    after = wait_for_cards(appliance, lambda c: c[1]["up"] and c[1]["pid"] not in (0, killed)
                           and c[1]["state"] == "ready", RESPAWN_S, "worker 1's respawn")  # fmt: skip
    assert after[1]["restarts"] == {"crash": 1}
    assert (after[1]["role"], after[1]["device"], after[1]["cores"]) == ("light", "cpu", before[1]["cores"])
    assert after[0]["restarts"] == {} and after[0]["state"] == "ready" and after[0]["pid"] == before[0]["pid"]
    # the new incarnation's own counters (nothing was sent to it), never the dead one's
    assert after[1]["batches"] == 0 and after[1]["batch_size_counts"] == [0] * (len(BATCH_SIZE_BOUNDS) + 1)
    assert_histograms_count_every_batch(after[1])
    assert_clean_exit(appliance, appliance.stop())
