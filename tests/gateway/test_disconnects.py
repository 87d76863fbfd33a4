"""Work for clients that hung up is withdrawn (``gateway/coalesce.py``): four 2,048-input requests
whose clients disconnect at once must not hold a worker's pending budget, and the workers' own
``cancelled`` counters show what was dropped before the model.

Real appliance, one worker, the tiny transformer with long texts (so 8,192 inputs take seconds),
``max_pending_inputs`` just above what the four requests would hold."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from harness import Appliance, get, post

pytestmark = pytest.mark.slow

MAIN = "tiny"


def raw_request(inputs: list[str]) -> bytes:
    body = json.dumps({"model": MAIN, "inputs": [inputs], "use_cache": False}).encode()
    head = f"POST /api/embed/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def cancelled(appliance: Appliance) -> int:
    return sum(worker["cancelled"] for worker in get(appliance.url + "/stats")[2]["workers"])


def test_clients_that_hang_up_free_the_workers_budget(launch: Any, tiny_transformer: Path) -> None:
    appliance = launch([{"name": MAIN, "path": str(tiny_transformer), "main": True}], workers=1,
                       env={"APPLIANCE_MAX_PENDING_INPUTS": "8200", "APPLIANCE_CACHE_BYTES": "0"})  # fmt: skip
    text = "a long sentence of many words that the tiny model has to read " * 12  # past its 128 tokens
    sockets = []
    for n in range(4):
        sock = socket.create_connection(("127.0.0.1", int(appliance.url.rsplit(":", 1)[1])))
        sock.sendall(raw_request([f"{n}-{i} {text}" for i in range(2048)]))
        sockets.append(sock)
    time.sleep(0.2)  # the four are in the worker's queue
    for sock in sockets:
        sock.close()  # every client hangs up at once
    deadline = time.monotonic() + 10
    while True:  # a newcomer is served, not refused for the budget the four held
        status, _, body = post(appliance.url + "/api/embed", {"model": MAIN, "input": ["a newcomer"]})
        if status == 200:
            break
        assert status == 429 and time.monotonic() < deadline, (status, body)
        time.sleep(0.1)
    time.sleep(2.5)  # the worker's Stats come once a second
    assert cancelled(appliance) == 4, "each abandoned request is withdrawn from the worker"
    computed = sum(worker["items"] for worker in get(appliance.url + "/stats")[2]["workers"])
    assert computed < 4 * 2048 // 2, f"{computed} inputs computed for clients that had gone"
