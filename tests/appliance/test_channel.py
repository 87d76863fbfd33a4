"""appliance/ipc/channel.py: real processes, real /dev/shm segments, real eventfds, uvloop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import msgspec
import pytest
import uvloop

from appliance.ipc.channel import (
    NAME_RE,
    SHM_DIR,
    Channel,
    ChannelSpec,
    SpinPolicy,
    creator_alive,
    sweep_stale_segments,
)

sys.path.insert(0, str(Path(__file__).parent))
import _channel_peer as peer  # noqa: E402

PEER = [sys.executable, str(Path(__file__).with_name("_channel_peer.py"))]
STARTUP_S = 30.0  # a fresh interpreter on two busy cores


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


def spawn(*args: str, pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[str]:
    return subprocess.Popen([*PEER, *args], pass_fds=pass_fds, stdout=subprocess.PIPE, text=True)


def spec_json(channel: Channel) -> str:
    return msgspec.json.encode(channel.spec).decode()


# ---- creation and attachment ------------------------------------------------------------
def test_segment_is_private_pid_tagged_and_the_spec_travels_as_json(channel: Channel) -> None:
    info = os.stat(channel.path)
    assert stat.S_IMODE(info.st_mode) == 0o600
    match = NAME_RE.match(channel.spec.name)
    assert match and int(match.group(1)) == os.getpid()
    assert msgspec.json.decode(spec_json(channel), type=ChannelSpec) == channel.spec
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
    for ring_bytes, why in ((1 << 15, "not a version 1 channel"), (1 << 17, "the spec needs")):
        wrong = msgspec.structs.replace(channel.spec, ring_bytes=ring_bytes)
        with pytest.raises(ValueError, match=why):  # a view left alive would be a BufferError
            Channel.attach(wrong)


def test_creator_liveness_sees_through_pid_reuse() -> None:
    now = time.time()
    assert creator_alive(os.getpid(), now)
    assert not creator_alive(os.getpid(), now - 3600)  # we started after it: a reused pid
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(STARTUP_S)
    assert not creator_alive(child.pid, now)


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
def test_uvloop_reader_delivers_rings_and_rescues(channel: Channel) -> None:
    worker = attach_here(channel)

    async def scenario() -> list[bytes]:
        loop = asyncio.get_running_loop()
        got: list[bytes] = []
        arrived = asyncio.Event()

        def on_records(records: list[bytes]) -> None:
            got.extend(records)
            arrived.set()

        channel.start_reader(loop, on_records)
        for record in (b"one", b"two"):  # through the doorbell
            assert worker.send_response(record)
            await asyncio.wait_for(arrived.wait(), 5.0)
            arrived.clear()
        assert worker.responses.try_write(b"silent")  # published, doorbell never rung
        await asyncio.wait_for(arrived.wait(), 5.0)
        channel.stop_reader()
        assert worker.send_response(b"after stop")
        await asyncio.sleep(0.05)
        return got

    try:
        got = uvloop.run(scenario())
        assert got == [b"one", b"two", b"silent"]
        assert worker.stats["doorbells"] == 2 and channel.stats["rescues"] == 1
        assert channel.poll_responses() == [b"after stop"]
    finally:
        worker.close()


def test_spin_policy_backs_off_while_windows_catch_nothing() -> None:
    policy = SpinPolicy()
    assert policy.allow()  # a window opens ...
    skipped = []
    for _ in range(12):
        policy.record(caught=False)  # ... and catches nothing
        skips = 0
        while not policy.allow():  # sends without a window, until the next one opens
            skips += 1
        skipped.append(skips)
    assert skipped == [1, 2, 4, 8, 16, 32, 64, 128, 256, 256, 256, 256]
    policy.record(caught=True)
    assert policy.allow() and policy.allow()


def test_spin_policy_resumes_when_traffic_gets_fast_unless_the_core_is_busy() -> None:
    policy = SpinPolicy()
    for _ in range(5):
        policy.record(caught=False)
    assert not policy.allow()
    policy.would_have_caught()  # a record came quickly while we slept: spin again
    assert policy.allow()
    policy.record(caught=False, contended=True)  # the spin lost its core
    policy.would_have_caught()
    assert not policy.allow()  # quick records do not justify spinning on a busy core


# ---- two real processes -----------------------------------------------------------------
def test_futures_resolved_through_a_real_worker_under_uvloop() -> None:
    channel = Channel.create(1 << 16, checked=True)  # the weakly-ordered-CPU mode, across processes
    assert channel.requests.checked and channel.responses.checked
    worker = spawn("echo", spec_json(channel), pass_fds=channel.pass_fds)
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

    try:
        answers = uvloop.run(run_gateway())
        assert answers == [(b"request %d" % i)[::-1] for i in range(trips)]
        assert channel.send_request(b"")
        out, _ = worker.communicate(timeout=STARTUP_S)
        assert worker.returncode == 0
        # Answers came inside spin windows, so the worker rarely had to ring the doorbell.
        assert channel.stats["spin_catches"] > 0
        assert json.loads(out)["doorbells"] < trips // 2
    finally:
        worker.kill()
        worker.wait()
        channel.close()
        channel.unlink()



@pytest.mark.slow
def test_100k_seeded_records_each_way_through_a_wrapping_ring() -> None:
    count, ring_bytes = 100_000, 1 << 15  # ~75 MB each way through 32 KiB: ~2,300 wraps
    gateway = Channel.create(ring_bytes)
    worker = spawn("stream", spec_json(gateway), str(count), pass_fds=gateway.pass_fds)

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
        worker.kill()
        worker.wait()
        gateway.close()
        gateway.unlink()


def test_attacher_exit_or_kill_never_unlinks_the_creators_segment(channel: Channel) -> None:
    for how in ("exit", "hold"):
        child = spawn("attach", spec_json(channel), how, pass_fds=channel.pass_fds)
        assert child.stdout is not None and child.stdout.readline() == "attached\n"
        if how == "hold":
            child.send_signal(signal.SIGKILL)
        assert child.wait(STARTUP_S) == (0 if how == "exit" else -signal.SIGKILL)
        child.stdout.close()
        assert os.path.exists(channel.path)
        assert channel.spec.name not in sweep_stale_segments()  # we, the creator, are alive
    assert channel.poll_responses() == [b"attached", b"attached"]


def test_sigkilled_creator_leaves_a_segment_the_next_sweep_removes() -> None:
    child = spawn("create")
    assert child.stdout is not None
    spec = msgspec.json.decode(child.stdout.readline(), type=ChannelSpec)
    path = os.path.join(SHM_DIR, spec.name)
    assert NAME_RE.match(spec.name).group(1) == str(child.pid)  # type: ignore[union-attr]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    child.send_signal(signal.SIGKILL)
    child.wait(STARTUP_S)
    child.stdout.close()
    assert os.path.exists(path)  # nobody unlinked it: that is what the sweep is for
    assert spec.name in sweep_stale_segments()
    assert not os.path.exists(path)


def test_sweep_keeps_live_and_foreign_names(channel: Channel, tmp_path: Path) -> None:
    ours_alive = os.path.join(SHM_DIR, f"appl-{os.getpid()}-{'0' * 16}")
    unrelated = os.path.join(SHM_DIR, "appl-not-ours")
    for path in (ours_alive, unrelated):
        Path(path).touch(mode=0o600)
    try:
        removed = sweep_stale_segments()
        assert os.path.exists(ours_alive) and os.path.exists(unrelated) and os.path.exists(channel.path)
        assert all(NAME_RE.match(name) for name in removed)
    finally:
        os.unlink(ours_alive)
        os.unlink(unrelated)


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
