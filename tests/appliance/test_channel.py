"""appliance/ipc/channel.py: real processes, real /dev/shm segments, real eventfds, uvloop.

The segment on its own (names, permissions, attach checks, sweep) is tested in test_segment.py,
the doorbell and the spin policy in test_doorbell.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import msgspec
import pytest
import uvloop

from appliance.ipc.channel import Channel
from appliance.protocol import ChannelSpec

sys.path.insert(0, str(Path(__file__).parent))
import _channel_peer as peer  # noqa: E402


@pytest.fixture
def channel() -> Iterator[Channel]:
    created = Channel.create(1 << 16)
    yield created
    created.close()
    created.unlink()


def attach_here(channel: Channel) -> Channel:
    """The worker side in this process: attach with our own copies of the eventfds."""
    fds = {"request_fd": os.dup(channel.spec.request_fd), "response_fd": os.dup(channel.spec.response_fd)}
    return Channel.attach(msgspec.structs.replace(channel.spec, **fds))


# ---- creation and attachment ------------------------------------------------------------
def test_the_spec_travels_as_json_and_names_the_eventfds_to_pass(channel: Channel) -> None:
    assert msgspec.json.decode(peer.spec_json(channel), type=ChannelSpec) == channel.spec
    assert os.path.exists(channel.path) and channel.path.endswith(channel.spec.name)
    assert channel.pass_fds == (channel.spec.request_fd, channel.spec.response_fd)
    for fd in channel.pass_fds:
        assert os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventfd]"
        assert not os.get_inheritable(fd)  # close-on-exec: only pass_fds carries them over


def test_round_trip_and_heartbeat_in_one_process(channel: Channel) -> None:
    worker = attach_here(channel)
    try:
        assert channel.send_request(b"request")
        assert worker.wait_requests(1.0) == [b"request"]
        assert worker.send_response(b"response")
        assert channel.poll_responses() == [b"response"]
        before = channel.heartbeat()
        worker.beat()
        worker.beat()
        assert channel.heartbeat() == before + 2
        with pytest.raises(RuntimeError, match="only the process that created"):
            worker.unlink()
    finally:
        worker.close()
    assert os.path.exists(channel.path)


def test_attaching_without_inherited_fds_fails_clearly(channel: Channel) -> None:
    broken = msgspec.structs.replace(channel.spec, request_fd=9999)
    with pytest.raises(OSError, match="pass_fds"):
        Channel.attach(broken)


def test_a_spec_that_does_not_match_the_segment_is_refused(channel: Channel) -> None:
    for ring_bytes, why in ((1 << 15, r"not a version \d+ channel"), (1 << 17, "the spec needs")):
        wrong = msgspec.structs.replace(channel.spec, ring_bytes=ring_bytes)
        with pytest.raises(ValueError, match=why):  # a view left alive would be a BufferError
            Channel.attach(wrong)


def test_close_releases_every_view_and_is_idempotent(channel: Channel) -> None:
    worker = attach_here(channel)
    assert channel.send_request(b"x") and worker.poll_requests() == [b"x"]
    worker.close()  # would raise BufferError if a view were still alive
    worker.close()


# ---- doorbells and waiting --------------------------------------------------------------
def test_doorbell_rings_only_for_a_parked_consumer_once_per_park(channel: Channel) -> None:
    worker = attach_here(channel)
    try:
        assert channel.send_request(b"awake")
        assert channel.stats["doorbells"] == 0  # worker not parked: no syscall
        worker.requests.park()
        for i in range(5):
            assert channel.send_request(b"%d" % i)
        assert channel.stats["doorbells"] == 1  # coalesced: one ring per park
        assert worker.wait_requests(1.0) == [b"awake", b"0", b"1", b"2", b"3", b"4"]
    finally:
        worker.close()


def test_wait_times_out_with_nothing_and_does_not_spin(channel: Channel) -> None:
    worker = attach_here(channel)
    try:
        cpu, start = time.process_time(), time.monotonic()
        assert worker.wait_requests(0.2) == []
        elapsed = time.monotonic() - start
        assert 0.19 <= elapsed < 2.0
        assert time.process_time() - cpu < 0.5 * elapsed  # sleeping, not burning a core
        assert worker.stats["rescues"] == 0
    finally:
        worker.close()


def test_a_lost_wake_up_is_rescued_within_the_sleep_bound(channel: Channel) -> None:
    worker = attach_here(channel)
    result: list[list[bytes]] = []
    waiter = threading.Thread(target=lambda: result.append(worker.wait_requests(10.0)))
    try:
        waiter.start()
        deadline = time.monotonic() + 5.0
        while not worker.requests.parked and time.monotonic() < deadline:
            time.sleep(0.001)
        assert worker.requests.parked
        # The race, forced: the record is published but the doorbell is never rung.
        written = time.monotonic()
        assert channel.requests.try_write(b"lost")
        waiter.join(5.0)
        assert result == [[b"lost"]]
        assert time.monotonic() - written < 1.0  # rescue_s (2 ms) plus a busy machine's slack
        assert worker.stats["rescues"] == 1 and channel.stats["doorbells"] == 0
    finally:
        waiter.join(5.0)
        worker.close()


def test_an_idle_wait_sleeps_a_short_slice_then_long_ones_and_stays_parked(channel: Channel) -> None:
    worker = attach_here(channel)
    slices: list[float] = []
    wait = worker._request_bell.wait

    def counted(timeout: float) -> bool:
        slices.append(timeout)
        return wait(timeout)

    worker._request_bell.wait = counted  # type: ignore[method-assign]
    try:
        assert worker.wait_requests(0.35) == []
        # one park: the race's short sleep, then idle_rescue_s at a time (was ~175 slices of 2 ms)
        assert slices[0] == worker.rescue_s
        assert 3 <= len(slices) <= 6 and all(s <= worker.idle_rescue_s for s in slices)
        assert channel.stats["doorbells"] == 0 and not worker.requests.parked
        # a record sent during a long slice finds the park and rings: no waiting out the slice
        sender = threading.Timer(0.05, channel.send_request, args=(b"rung",))
        sender.start()
        started = time.monotonic()
        assert worker.wait_requests(5.0) == [b"rung"]
        sender.join()
        assert time.monotonic() - started < 0.05 + worker.idle_rescue_s
        assert channel.stats["doorbells"] == 1 and worker.stats["wakeups"] == 1
    finally:
        worker.close()


def test_a_spin_on_a_busy_core_gives_up_and_the_doorbell_wakes(channel: Channel) -> None:
    worker = attach_here(channel)
    worker.contended_yield_s = 0.0  # every yield looks as if another task took the core
    worker.rescue_s = 30.0  # one park, one sleep: only the doorbell can end it in time
    sender = threading.Timer(0.2, channel.send_request, args=(b"later",))
    sender.start()
    try:
        assert worker.wait_requests(10.0) == [b"later"]
        stats = worker.stats
        assert (stats["spins_cut"], stats["wakeups"], stats["rescues"]) == (1, 1, 0)
        assert channel.stats["doorbells"] == 1
    finally:
        sender.join()
        worker.close()


def test_gateway_spin_window_closes_on_a_busy_core(channel: Channel) -> None:
    worker = attach_here(channel)
    channel.spin_s = 30.0  # only contention can close this window
    channel.contended_yield_s = 0.0

    def answer() -> None:
        for record in worker.wait_requests(10.0):
            worker.send_response(record[::-1])

    async def scenario() -> bytes:
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[bytes] = loop.create_future()
        channel.start_reader(loop, lambda records: answered.set_result(records[0]))
        responder = threading.Thread(target=answer)
        responder.start()
        assert channel.send_request(b"question")
        try:
            return await asyncio.wait_for(answered, 10.0)
        finally:
            channel.stop_reader()
            responder.join(10.0)

    try:
        assert uvloop.run(scenario()) == b"noitseuq"
        assert channel.stats["spins_cut"] == 1
    finally:
        worker.close()


def test_full_request_ring_pushes_back_and_drops_nothing() -> None:
    with Channel.create(1024) as gateway:
        worker = attach_here(gateway)
        try:
            sent = []
            while gateway.send_request(b"%04d" % len(sent) + bytes(60)):
                sent.append(b"%04d" % len(sent) + bytes(60))
            assert gateway.stats["full"] == 1 and len(sent) == 1024 // 72
            assert worker.poll_requests() == sent
            assert gateway.send_request(b"after")
        finally:
            worker.close()


def test_send_response_waits_bounded_while_full_then_delivers() -> None:
    with Channel.create(1024) as gateway:
        worker = attach_here(gateway)
        try:
            while worker.send_response(bytes(100), timeout=0):
                pass
            late = b"late" + bytes(96)
            start = time.monotonic()
            assert not worker.send_response(late, timeout=0.05)
            assert 0.05 <= time.monotonic() - start < 1.0
            drainer = threading.Timer(0.05, gateway.poll_responses)
            drainer.start()
            assert worker.send_response(late, timeout=5.0)  # room appears while it waits
            drainer.join()
            assert gateway.poll_responses() == [late]
            assert worker.stats["full_waits"] == 2
        finally:
            worker.close()


# ---- the gateway side under uvloop --------------------------------------------------------
class Delivered:
    """A reader's ``on_records``: keeps what it delivers; ``next`` waits for the next delivery."""

    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.arrived = asyncio.Event()

    def __call__(self, records: list[bytes]) -> None:
        self.got.extend(records)
        self.arrived.set()

    async def next(self, timeout: float = 5.0) -> None:
        await asyncio.wait_for(self.arrived.wait(), timeout)
        self.arrived.clear()


def test_uvloop_reader_delivers_rings_and_rescues(channel: Channel) -> None:
    worker = attach_here(channel)

    async def scenario() -> list[bytes]:
        delivered = Delivered()
        channel.start_reader(asyncio.get_running_loop(), delivered)
        for record in (b"one", b"two"):  # through the doorbell
            assert worker.send_response(record)
            await delivered.next()
        assert worker.responses.try_write(b"silent")  # published, doorbell never rung
        await delivered.next()
        channel.stop_reader()
        assert worker.send_response(b"after stop")
        await asyncio.sleep(0.05)
        return delivered.got

    try:
        got = uvloop.run(scenario())
        assert got == [b"one", b"two", b"silent"]
        assert worker.stats["doorbells"] == 2 and channel.stats["rescues"] == 1
        assert channel.poll_responses() == [b"after stop"]
    finally:
        worker.close()


def test_an_idle_reader_ticks_slowly_and_a_park_hurries_the_next_tick(channel: Channel) -> None:
    worker = attach_here(channel)

    async def scenario() -> list[bytes]:
        delivered = Delivered()
        channel.start_reader(asyncio.get_running_loop(), delivered)
        await asyncio.sleep(0.05)  # nothing happens: the ticks back off
        assert channel._tick_s == channel.idle_rescue_s
        assert worker.send_response(b"rung")  # the doorbell; the delivery parks again
        await delivered.next()
        assert channel._tick_s == channel.rescue_s
        await asyncio.sleep(0.05)
        assert channel._tick_s == channel.idle_rescue_s
        # a record the doorbell never announced, found by a slow tick: in idle_rescue_s at most
        assert worker.responses.try_write(b"silent")
        await delivered.next(channel.idle_rescue_s + 1.0)
        channel.stop_reader()
        return delivered.got

    try:
        assert uvloop.run(scenario()) == [b"rung", b"silent"]
        assert channel.stats["rescues"] == 1
    finally:
        worker.close()


# ---- two real processes -----------------------------------------------------------------
def test_futures_resolved_through_a_real_worker_under_uvloop() -> None:
    channel = Channel.create(1 << 16, checked=True)  # the weakly-ordered-CPU mode, across processes
    assert channel.requests.checked and channel.responses.checked
    channel.spin_s = 0.05  # generous, so even a busy machine answers inside the window ...
    channel.contended_yield_s = 10.0  # ... and the window stays open however busy the cores are
    trips = 300

    async def run_gateway() -> list[bytes]:
        loop = asyncio.get_running_loop()
        waiting: dict[bytes, asyncio.Future[bytes]] = {}

        def on_records(records: list[bytes]) -> None:
            for record in records:
                waiting.pop(record[::-1]).set_result(record)

        channel.start_reader(loop, on_records)
        answers = []
        for i in range(trips):
            request = b"request %d" % i
            waiting[request] = loop.create_future()
            assert channel.send_request(request)
            answers.append(await asyncio.wait_for(waiting[request], 10.0))
        channel.stop_reader()
        return answers

    with channel:  # closes and unlinks, however the test ends
        worker = peer.spawn("echo", peer.spec_json(channel), pass_fds=channel.pass_fds)
        try:
            answers = uvloop.run(run_gateway())
            assert answers == [(b"request %d" % i)[::-1] for i in range(trips)]
            assert channel.send_request(b"")
            out, _ = worker.communicate(timeout=peer.STARTUP_S)
            assert worker.returncode == 0
            # Answers came inside spin windows, so the worker rarely had to ring the doorbell.
            assert channel.stats["spin_catches"] > 0
            assert json.loads(out)["doorbells"] < trips // 2
        finally:
            peer.stop(worker)


@pytest.mark.slow
def test_100k_seeded_records_each_way_through_a_wrapping_ring() -> None:
    count, ring_bytes = 100_000, 1 << 15  # ~75 MB each way through 32 KiB: ~2,300 wraps
    gateway = Channel.create(ring_bytes)

    async def run_gateway() -> tuple[int, list[int]]:
        loop = asyncio.get_running_loop()
        expected = peer.records(peer.RESPONSE_SEED, count)
        done = loop.create_future()
        received, mismatches = 0, []

        def on_records(records: list[bytes]) -> None:
            nonlocal received
            for record in records:
                if record != next(expected):
                    mismatches.append(received)
                received += 1
            if received == count and not done.done():
                done.set_result(None)

        gateway.start_reader(loop, on_records)
        for record in peer.records(peer.REQUEST_SEED, count):
            while not gateway.send_request(record):
                await asyncio.sleep(0.0005)  # back-pressure: let the worker catch up
        await asyncio.wait_for(done, 60.0)
        return received, mismatches

    with gateway:
        worker = peer.spawn("stream", peer.spec_json(gateway), str(count), pass_fds=gateway.pass_fds)
        try:
            beat = gateway.heartbeat()
            received, mismatches = uvloop.run(run_gateway())
            out, _ = worker.communicate(timeout=60.0)
            assert worker.returncode == 0, out
            assert received == count and mismatches == []
            worker_stats = json.loads(out)
            assert worker_stats["received"] == count and worker_stats["sent"] == count
            assert gateway.stats["full"] > 0 and worker_stats["full"] > 0  # both rings ran full
            assert gateway.heartbeat() > beat
        finally:
            peer.stop(worker)


def test_reset_after_a_worker_died_drops_its_leftovers(channel: Channel) -> None:
    worker = attach_here(channel)
    assert channel.send_request(b"never read") and worker.send_response(b"never delivered")
    worker.requests.park()  # it died asleep
    worker.close()
    channel.reset()
    assert channel.requests.is_empty() and channel.responses.is_empty()
    assert not channel.requests.parked
    replacement = attach_here(channel)
    try:
        assert channel.send_request(b"fresh")
        assert replacement.wait_requests(1.0) == [b"fresh"]
    finally:
        replacement.close()


# ---- room in a full request ring ----------------------------------------------------------
def fill_requests(channel: Channel) -> list[bytes]:
    """Send numbered 64-byte requests until the ring refuses one (which asks for a room signal)."""
    sent: list[bytes] = []
    while channel.send_request(b"%04d" % len(sent) + bytes(60)):
        sent.append(b"%04d" % len(sent) + bytes(60))
    return sent


def test_a_real_worker_draining_a_full_ring_rings_room_once_and_the_gateway_hears_it() -> None:
    channel = Channel.create(1024)
    channel.rescue_s = 30.0  # no rescue tick in this test: only the worker's doorbell can say room

    async def run_gateway() -> tuple[list[bytes], int]:
        loop = asyncio.get_running_loop()
        answers: list[bytes] = []
        room = asyncio.Event()
        rooms = 0

        def on_room() -> None:
            nonlocal rooms
            rooms += 1
            room.set()

        channel.start_reader(loop, answers.extend, on_room=on_room)
        worker = peer.spawn("echo", peer.spec_json(channel), pass_fds=channel.pass_fds)
        try:
            await asyncio.wait_for(room.wait(), peer.STARTUP_S)
            assert channel.send_request(b"late")  # the sender that waited goes now
            while len(answers) < len(sent) + 1:
                await asyncio.sleep(0.005)
            assert channel.send_request(b"")  # the echo's stop
            out, _ = await loop.run_in_executor(None, worker.communicate, peer.STARTUP_S)
            assert worker.returncode == 0
            assert json.loads(out)["room_rung"] == 1  # one signal for the whole drain, not per record
        finally:
            peer.stop(worker)
        channel.stop_reader()
        return answers, rooms

    with channel:
        sent = fill_requests(channel)
        assert channel.requests.room_wanted
        answers, rooms = uvloop.run(run_gateway())
        assert answers == [record[::-1] for record in [*sent, b"late"]]
        assert rooms == 1 and channel.stats["room_signals"] == 1 and channel.stats["room_rescues"] == 0


def test_a_room_signal_lost_to_the_store_race_is_rescued_by_the_timer(channel: Channel) -> None:
    worker = attach_here(channel)

    async def scenario() -> None:
        room = asyncio.Event()
        channel.start_reader(asyncio.get_running_loop(), lambda records: None, on_room=room.set)
        fill_requests(channel)
        # The worker's load of the room word ran before the gateway's store became visible: it
        # drains without seeing the word, so rings nothing (drain bypasses Channel's check).
        assert worker.requests.drain()
        await asyncio.wait_for(room.wait(), 5.0)
        channel.stop_reader()

    try:
        uvloop.run(scenario())
        assert channel.stats["room_rescues"] == 1 and channel.stats["room_signals"] == 0
        assert worker.stats["room_rung"] == 0
    finally:
        worker.close()


def test_a_clear_that_overwrote_a_newer_refusal_is_asked_again_not_taken_for_room(channel: Channel) -> None:
    worker = attach_here(channel)
    channel.rescue_s = 30.0

    async def scenario() -> int:
        rooms = 0

        def on_room() -> None:
            nonlocal rooms
            rooms += 1

        channel.start_reader(asyncio.get_running_loop(), lambda records: None, on_room=on_room)
        fill_requests(channel)
        assert worker.poll_requests()  # drains, takes the word and rings
        fill_requests(channel)  # the gateway has not read the doorbell yet; full again, word set
        assert worker.requests.take_room_request()  # the worker's clear landing after that set
        await asyncio.sleep(0.05)  # the doorbell is read: the head is the second refusal's
        assert rooms == 0 and channel.requests.room_wanted  # no room, and asked again
        assert worker.poll_requests()
        await asyncio.sleep(0.05)
        channel.stop_reader()
        return rooms

    try:
        assert uvloop.run(scenario()) == 1
        assert worker.stats["room_rung"] == 2 and channel.stats["room_signals"] == 1
    finally:
        worker.close()
