"""The boot heartbeat on a real channel. ``die_with_parent`` would outlive a test in this process:
test_worker_process checks it in a real worker whose parent is killed."""

from __future__ import annotations

import time
from typing import Iterator

import pytest

from appliance.ipc.channel import Channel
from workers.liveness import BootHeartbeat


@pytest.fixture
def channel() -> Iterator[Channel]:
    with Channel.create(1 << 16) as created:
        yield created
        created.unlink()


def test_beats_at_once_and_then_every_interval(channel: Channel) -> None:
    with BootHeartbeat(channel, interval=0.05):
        deadline = time.monotonic() + 5
        while channel.heartbeat() < 4:
            assert time.monotonic() < deadline, f"only {channel.heartbeat()} beats in 5s"
            time.sleep(0.01)


def test_nothing_beats_once_stop_returns(channel: Channel) -> None:
    """The serving loop becomes the only writer of the word the moment ``stop`` returns."""
    heartbeat = BootHeartbeat(channel, interval=0.001)
    heartbeat.start()
    time.sleep(0.05)
    heartbeat.stop()
    stopped_at = channel.heartbeat()
    time.sleep(0.05)
    assert channel.heartbeat() == stopped_at > 0
    heartbeat.stop()  # a second stop (the worker's exit path) is harmless

