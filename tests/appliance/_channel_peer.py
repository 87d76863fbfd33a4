"""Child-process peer for tests/appliance/test_channel.py and test_segment.py (a fresh
interpreter, like a worker).

    python _channel_peer.py create                       create a channel, print its spec, sleep
    python _channel_peer.py attach <spec> exit|hold      attach, answer "attached", exit or sleep
    python _channel_peer.py stream <spec> <n>            verify n seeded requests while sending
                                                         n seeded responses; print stats as JSON
    python _channel_peer.py echo <spec>                  answer each request reversed until an
                                                         empty one; print stats as JSON

Also imported by the tests for the seeded record streams, so both sides draw the same bytes, and
for ``spawn``/``stop``, which start and end it.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from typing import Iterator

import msgspec

from appliance.ipc.channel import Channel
from appliance.protocol import ChannelSpec

POOL = random.Random(20240601).randbytes(1 << 16)
MAX_RECORD = 1500
REQUEST_SEED = 1
RESPONSE_SEED = 2
HOLD_S = 60.0
STARTUP_S = 30.0  # a fresh interpreter on two busy cores


def spawn(*args: str, pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[str]:
    """Start this file as a child process; its stdout is a text pipe."""
    return subprocess.Popen([sys.executable, __file__, *args], pass_fds=pass_fds, stdout=subprocess.PIPE, text=True)


def stop(child: subprocess.Popen[str]) -> None:
    """For ``finally``: kill a child that is still running, reap it, close its pipe."""
    child.kill()
    child.wait(STARTUP_S)
    if child.stdout is not None:
        child.stdout.close()


def spec_json(channel: Channel) -> str:
    return msgspec.json.encode(channel.spec).decode()


def records(seed: int, count: int) -> Iterator[bytes]:
    """``count`` records of 0..1,500 bytes, each a seeded random slice of a random pool."""
    rng = random.Random(seed)
    for _ in range(count):
        size = rng.randrange(MAX_RECORD + 1)
        start = rng.randrange(len(POOL) - size)
        yield POOL[start : start + size]


def stream(channel: Channel, count: int) -> dict[str, int]:
    """Both directions at once; raises on the first byte or order mismatch."""
    expected = records(REQUEST_SEED, count)
    outgoing = records(RESPONSE_SEED, count)
    received = sent = 0
    pending = next(outgoing, None)
    while received < count or sent < count:
        progressed = False
        while pending is not None and channel.send_response(pending, timeout=0):
            sent, progressed, pending = sent + 1, True, next(outgoing, None)
        # Nothing could be sent (ring full or all sent): block on requests for a moment instead.
        got = channel.poll_requests() if progressed else channel.wait_requests(0.001)
        for record in got:
            if record != next(expected):
                raise AssertionError(f"request {received} differs from what was sent")
            received += 1
        channel.beat()
    return channel.stats


def echo(channel: Channel) -> dict[str, int]:
    """A worker's loop reduced to answering, through the worker-side API."""
    while True:
        for record in channel.wait_requests(1.0):
            if not record:
                return channel.stats
            channel.send_response(record[::-1])


def main(argv: list[str]) -> int:
    mode = argv[0]
    if mode == "create":
        channel = Channel.create(1 << 16)
        print(msgspec.json.encode(channel.spec).decode(), flush=True)
        time.sleep(HOLD_S)  # the test SIGKILLs us here
        return 1
    channel = Channel.attach(msgspec.json.decode(argv[1], type=ChannelSpec))
    if mode == "stream":
        print(json.dumps(stream(channel, int(argv[2]))), flush=True)
    elif mode == "echo":
        print(json.dumps(echo(channel)), flush=True)
    elif mode == "attach":
        channel.send_response(b"attached")
        print("attached", flush=True)
        if argv[2] == "hold":
            time.sleep(HOLD_S)
    channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
