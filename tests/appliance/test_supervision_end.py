"""``appliance/serving.py``'s reaction to the end of the supervision task: whatever ends it, the
appliance records why and stops (``/ready`` 503 while draining, no more watchdog pings, exit 1)."""

from __future__ import annotations

import asyncio
import errno
import logging
from types import SimpleNamespace

import pytest

from appliance import serving
from appliance.serving import on_supervision_end, ping_watchdog
from appliance.supervisor import SlotLost


async def ended_with(error: BaseException) -> SimpleNamespace:
    async def supervise() -> None:
        raise error

    parts = SimpleNamespace(stop=asyncio.Event(), failure="")
    task = asyncio.create_task(supervise())
    await asyncio.gather(task, return_exceptions=True)
    on_supervision_end(parts, task)  # type: ignore[arg-type]
    return parts


def test_a_lost_slot_stops_the_appliance_naming_the_slot(caplog: pytest.LogCaptureFixture) -> None:
    lost = SlotLost("worker 1 exited with boot failure (exit code 3); not respawning it.")
    with caplog.at_level(logging.ERROR, logger="appliance.serving"):
        parts = asyncio.run(ended_with(lost))
    assert parts.stop.is_set() and "worker 1 exited with boot failure" in parts.failure
    assert not caplog.records, "the supervisor already logged the cause; no traceback for it"


def test_an_error_inside_the_cycle_stops_the_appliance_with_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="appliance.serving"):
        parts = asyncio.run(ended_with(OSError(errno.EMFILE, "Too many open files")))
    assert parts.stop.is_set() and "Too many open files" in parts.failure
    (record,) = caplog.records
    assert "the supervisor stopped unexpectedly" in record.getMessage() and record.exc_info


def test_the_watchdog_pings_stop_once_a_failure_is_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[str] = []
    monkeypatch.setattr(serving.sdnotify, "watchdog_interval", lambda: 0.01)
    monkeypatch.setattr(serving.sdnotify, "notify", sent.append)

    async def main() -> None:
        parts = SimpleNamespace(failure="")
        pinging = asyncio.create_task(ping_watchdog(parts))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        parts.failure = "a worker slot is lost: worker 0"
        await asyncio.wait_for(pinging, 1.0)  # ends by itself

    asyncio.run(main())
    assert sent and set(sent) == {"WATCHDOG=1"}
