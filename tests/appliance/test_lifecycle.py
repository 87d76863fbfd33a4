"""`appliance serve` lifecycle with real processes: graceful SIGTERM and boot failure."""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from harness import Appliance, assert_clean_exit

pytestmark = pytest.mark.slow

IN_FLIGHT = 200  # requests accepted before SIGTERM
LATE = 50  # requests sent right after it, racing the listener's close
INPUTS = 16  # per request, each text its own: with the cache off every one is a worker's work
RECEIPT_S = 60.0  # every request of the first wave accepted (200 connects on a 2-core box)
SETTLE_S = 0.3  # after the last receipt: the last bodies reach the workers
ANSWER_S = 90.0  # > the test shutdown grace (20 s): a hung request fails as one

# What "accepted" means. TCP connect() proves nothing: the kernel completes handshakes for
# connections the application has not accepted yet, and closing a listening socket resets
# those. So every request here is sent with `Expect: 100-continue`: the client sends its head
# and waits; aiohttp answers `100 Continue` once the application has read that head and routed
# it, and only then does the client send the body. That interim answer is the application's
# receipt: a request is ACCEPTED once its client has read `100 Continue` (or any other answer),
# and from then on it must end in a 200, or a 503 whose error type is `draining`. A reset, a
# closed connection, a timeout, any other status or error type is a dropped request.
# A request with no receipt never reached the application (refused once the listener closed, or
# reset while waiting in the accept queue); it may fail, and only late requests may do so.


@dataclass
class Outcome:
    accepted: bool
    status: int = 0  # 0: no final answer
    error: str = ""  # the error body's type, or what happened on the wire
    done: float = 0.0  # time.monotonic() of the final answer

    @property
    def completed(self) -> bool:
        """Ended as an accepted request must: served, or turned away because draining."""
        return (self.status, self.error) in ((200, ""), (503, "draining"))


class _Received:
    """Bytes already read, handed to ``http.client.HTTPResponse`` as if they were its socket."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def makefile(self, mode: str) -> io.BytesIO:
        return io.BytesIO(self.raw)


def final_answer(raw: bytes) -> tuple[int, str]:
    """(status, error type) of one whole HTTP response; (0, why) when it is not one."""
    response = http.client.HTTPResponse(_Received(raw))  # type: ignore[arg-type]
    try:
        response.begin()
        body = response.read()
    except http.client.HTTPException as exc:
        return 0, type(exc).__name__
    if response.status == 200:
        return 200, ""
    try:
        return response.status, str(json.loads(body)["error"]["type"])
    except (ValueError, KeyError, TypeError):
        return response.status, "unparsed"


async def embed(port: int, number: int, receipt: asyncio.Event) -> Outcome:
    """POST /api/embed with ``Expect: 100-continue``; ``receipt`` is set once accepted."""
    texts = [f"request {number} text {k}: " + "the quick brown fox jumps over the lazy dog " * 6 for k in range(INPUTS)]
    body = json.dumps({"model": "tiny", "input": texts}).encode()
    head = (f"POST /api/embed HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n").encode()  # fmt: skip
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), RECEIPT_S)
    except (OSError, TimeoutError) as exc:
        return Outcome(False, error=type(exc).__name__)
    accepted = False
    try:
        writer.write(head)
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), RECEIPT_S)
        accepted = True
        receipt.set()
        if first.startswith(b"HTTP/1.1 100 "):
            writer.write(body)
            first = b""
        raw = first + await asyncio.wait_for(reader.read(), ANSWER_S)  # to EOF: Connection: close
        return Outcome(True, *final_answer(raw), done=time.monotonic())
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        return Outcome(accepted, error=type(exc).__name__)
    finally:
        writer.close()


async def wait_for_receipts(receipts: list[asyncio.Event], requests: list[asyncio.Task[Outcome]]) -> None:
    deadline = time.monotonic() + RECEIPT_S
    while not all(r.is_set() for r in receipts):
        failed = [t.result() for t in requests if t.done() and not t.result().accepted]
        assert not failed, f"a request was not accepted before any signal: {failed[:3]}"
        assert time.monotonic() < deadline, f"{sum(not r.is_set() for r in receipts)} requests still unaccepted"
        await asyncio.sleep(0.01)


async def sigterm_under_load(appliance: Appliance) -> tuple[list[Outcome], list[Outcome], float]:
    """(the first wave, the late wave, when SIGTERM was sent)."""
    port = int(appliance.url.rsplit(":", 1)[1])
    receipts = [asyncio.Event() for _ in range(IN_FLIGHT)]
    first = [asyncio.create_task(embed(port, n, receipts[n])) for n in range(IN_FLIGHT)]
    await wait_for_receipts(receipts, first)
    await asyncio.sleep(SETTLE_S)
    appliance.send(signal.SIGTERM)
    signalled = time.monotonic()
    late = [asyncio.create_task(embed(port, IN_FLIGHT + n, asyncio.Event())) for n in range(LATE)]
    return list(await asyncio.gather(*first)), list(await asyncio.gather(*late)), signalled


def test_sigterm_with_200_requests_in_flight_completes_every_accepted_one(
    launch: Callable[..., Appliance], tiny_transformer: Path
) -> None:
    models = [{"name": "tiny", "path": str(tiny_transformer), "main": True}]
    appliance = launch(models, workers=2, env={"APPLIANCE_CACHE_BYTES": "0"})  # every request is work
    first, late, signalled = asyncio.run(sigterm_under_load(appliance))
    code = appliance.wait_exit(60)  # no second signal: that would mean "stop now"
    accepted = [o for o in first + late if o.accepted]
    dropped = [o for o in accepted if not o.completed]
    assert not dropped, f"{len(dropped)} accepted requests were not completed: {dropped[:5]}"
    assert all(o.accepted for o in first)
    # the test means something only if SIGTERM found work in flight, and that work was finished
    assert any(o.status == 200 and o.done > signalled for o in first), "nothing was in flight at SIGTERM"
    assert_clean_exit(appliance, code)


def test_boot_failure_exits_non_zero_naming_the_model_without_looping(
    launch: Callable[..., Appliance], tmp_path: Path, tiny_transformer: Path
) -> None:
    # The directory exists (so the start-up check passes) but holds no loadable model: the worker
    # itself must fail to load it, exit with the load-failure code, and not be respawned.
    broken = tmp_path / "no-such-model"
    broken.mkdir()
    (broken / "config.json").write_text("{ this is not json")
    models = [
        {"name": "tiny", "path": str(tiny_transformer), "main": True},
        {"name": "broken-model", "path": str(broken), "kind": "transformer"},
    ]
    appliance = launch(models, workers=1, wait_ready=False)
    code = appliance.process.wait(120)  # a hang fails here; the fixture kills what is left
    log = appliance.log()
    assert code != 0
    assert "broken-model" in log and "no-such-model" in log
    assert log.count("spawned") == 1, "the supervisor respawned a worker that cannot load its model"
    assert not appliance.leftovers().segments


def test_check_rejects_a_missing_model_path_before_serving(tmp_path: Path) -> None:
    config = tmp_path / "a.toml"
    config.write_text('[[models]]\nname = "m"\npath = "/nonexistent/model"\nmain = true\n')
    result = subprocess.run([sys.executable, "-m", "appliance.cli", "check", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 1
    assert "model 'm'" in result.stderr and "/nonexistent/model" in result.stderr
    assert "port = 11435" in result.stdout
