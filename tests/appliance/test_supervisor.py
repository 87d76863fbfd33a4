"""The supervisor (``appliance/supervisor.py``) over real processes and real shared memory.

Every worker is ``_fake_worker.py``: a fresh interpreter that attaches its real channel in a real
``WorkerLink`` and plays a scripted part (crash, hang, refuse to boot, report batches, drain, report
the size of numpy's BLAS pool).
The supervisor is driven as the serving lifecycle drives it: ``start``, ``run`` in the
background, then ``stop`` and ``link.close``. Timings are checked against the supervisor's own
clock readings where it exposes them (``next_spawn_at``, ``spawned_at``), so back-off delays are
exact; waits on processes are bounded by generous limits for two busy cores. Every test ends
with no worker process and no ``/dev/shm`` segment of this process left.
"""

from __future__ import annotations

import asyncio
import errno
import glob
import json
import logging
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import psutil
import pytest

from appliance.config import Config, ModelConfig
from appliance.ipc.ring import HEAD_WORD, Ring
from appliance.ipc.segment import HEADER_BYTES, Segment
from appliance.link import WorkerLink
from appliance.protocol import Bye, Ready, SlotStatus
from appliance.supervisor import BACKOFF_FIRST_S, TICK_S, BootError, SlotLost, Supervisor, WorkerHandle

FAKE_WORKER = Path(__file__).with_name("_fake_worker.py")
RING_BYTES = 1 << 16
GRACE_S = 2.0  # stop(): a serving fake drains in milliseconds; a hung one is killed after this
WAIT_S = 15.0  # bound on any wait for processes (a fresh interpreter takes ~0.6 s on an idle core)
CLOCK_SLACK_S = 0.05  # between two clock readings inside one synchronous supervisor call
MODELS = [ModelConfig("main", "/nowhere/main", main=True), ModelConfig("extra", "/nowhere/extra")]


class Slot(NamedTuple):
    """What the supervisor reads of ``appliance.slots.Slot``."""

    index: int
    role: str
    cores: tuple[int, ...] = ()
    gpu: int | None = None


class Events:
    """A ``WorkerEvents`` that records every call with its time; ``idle`` answers ``worker_idle``.
    Slot statuses are kept apart, in ``statuses``, so ``calls`` reads as the worker's life."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str, int, str]] = []  # (monotonic, event, worker, detail)
        self.statuses: list[tuple[int, SlotStatus]] = []
        self.idle: dict[int, bool] = {}
        self.idle_asked: Counter[int] = Counter()

    def worker_ready(self, worker: int, ready: Ready) -> None:
        self.calls.append((time.monotonic(), "ready", worker, str(ready.pid)))

    def worker_idle(self, worker: int) -> bool:
        self.idle_asked[worker] += 1
        return self.idle.get(worker, True)

    def worker_unavailable(self, worker: int) -> None:
        self.calls.append((time.monotonic(), "unavailable", worker, ""))

    def worker_lost(self, worker: int, reason: str) -> None:
        self.calls.append((time.monotonic(), "lost", worker, reason))

    def worker_status(self, worker: int, status: SlotStatus) -> None:
        self.statuses.append((worker, status))

    def status(self, worker: int) -> SlotStatus:
        """What the router was last told of ``worker``'s slot."""
        return [s for w, s in self.statuses if w == worker][-1]

    def states(self, worker: int) -> list[str]:
        return [s.state for w, s in self.statuses if w == worker]

    def of(self, worker: int, event: str | None = None) -> list[tuple[float, str, int, str]]:
        return [c for c in self.calls if c[2] == worker and (event is None or c[1] == event)]

    def kinds(self, worker: int) -> list[str]:
        return [c[1] for c in self.of(worker)]


class Rig:
    """One supervisor over fake workers; ``async with`` guarantees the clean-up every test checks."""

    def __init__(self, tmp_path: Path, plan: dict[int, list[str]], roles: tuple[str, ...] = ("light",),
                 slots: list[Slot] | None = None, **settings: object) -> None:  # fmt: skip
        self.dir = tmp_path
        (tmp_path / "plan.json").write_text(json.dumps({str(k): v for k, v in plan.items()}))
        self.config = Config(models=MODELS, ring_bytes=RING_BYTES, **settings)  # type: ignore[arg-type]
        self.slots = slots or [Slot(i, role) for i, role in enumerate(roles)]
        self.link = WorkerLink(RING_BYTES, len(self.slots))
        self.events = Events()
        self.byes: list[tuple[int, str]] = []
        self.supervisor: Supervisor
        self.runner: asyncio.Task[None] | None = None
        self.left_running: list[int] = []

    async def __aenter__(self) -> Rig:
        self.link.open()
        command = [sys.executable, str(FAKE_WORKER), str(self.dir)]
        self.supervisor = Supervisor(self.config, self.slots, self.link, self.events, command)
        self.link.subscribe(Bye, lambda worker, bye: self.byes.append((worker, bye.reason)))
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        try:
            await self.supervisor.stop(GRACE_S)
            if self.runner is not None:
                await asyncio.wait_for(self.runner, 4 * TICK_S)
        finally:
            self.link.close()  # unlinks every segment
            self.left_running = self.kill_strays()
        assert exc_type is not None or not self.left_running, f"worker processes still running after stop: {self.left_running}"

    def handle(self, worker: int = 0) -> WorkerHandle:
        return self.supervisor.handles[worker]

    def run(self) -> None:
        self.runner = asyncio.get_running_loop().create_task(self.supervisor.run())

    def log(self, worker: int | None = None) -> list[tuple[int, int, int, str]]:
        """The fakes' own record: (slot, incarnation, pid, event)."""
        return [r for r in self.log_of(self.dir) if worker is None or r[0] == worker]

    @staticmethod
    def log_of(folder: Path) -> list[tuple[int, int, int, str]]:
        path = folder / "log"
        rows = [line.split() for line in path.read_text().splitlines()] if path.exists() else []
        return [(int(s), int(i), int(p), e) for s, i, p, e in rows]

    def incarnations(self, worker: int) -> int:
        return sum(1 for r in self.log(worker) if r[3] == "start")

    def set_batches(self, worker: int, batches: int) -> None:
        path = self.dir / f"batches-{worker}"
        path.with_suffix(".tmp").write_text(str(batches))
        path.with_suffix(".tmp").rename(path)  # atomic: a fake never reads half a number

    def kill_strays(self) -> list[int]:
        """SIGKILL every fake of ours still running (zombies are not running); return their pids."""
        strays = []
        for pid in {r[2] for r in self.log()}:
            try:
                process = psutil.Process(pid)
                if process.ppid() != os.getpid() or process.status() == psutil.STATUS_ZOMBIE:
                    continue
                process.send_signal(signal.SIGKILL)
                process.wait(WAIT_S)
            except psutil.NoSuchProcess:
                continue
            strays.append(pid)
        return strays


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        await asyncio.sleep(0.01)


async def watch(handle: WorkerHandle, into: dict[str, list[float]]) -> None:
    """Record each new ``next_spawn_at`` and ``spawned_at`` (changes are >= 0.5 s apart)."""
    while True:
        for name in ("next_spawn_at", "spawned_at"):
            value = getattr(handle, name)
            if value and (not into[name] or into[name][-1] != value):
                into[name].append(value)
        await asyncio.sleep(0.005)


@pytest.fixture(autouse=True)
def no_segment_left() -> Iterator[None]:
    pattern = f"/dev/shm/appl-{os.getpid()}-*"
    before = set(glob.glob(pattern))
    yield
    assert set(glob.glob(pattern)) - before == set(), "a channel segment outlived its test"


# ---- 1. respawn back-off ---------------------------------------------------------------------
@pytest.mark.slow  # the back-off itself waits 4 s
@pytest.mark.timeout(60)
def test_crashes_are_respawned_with_a_doubling_back_off_reset_by_ready(tmp_path: Path) -> None:
    async def scenario() -> None:
        plan = {0: ["exit1", "exit1", "exit1", "ready"]}
        async with Rig(tmp_path, plan, worker_timeout=1.0, ready_timeout=20.0) as rig:
            handle, seen = rig.handle(), {"next_spawn_at": [], "spawned_at": []}
            watcher = asyncio.get_running_loop().create_task(watch(handle, seen))
            try:
                await rig.supervisor.start()  # three boot crashes, then Ready
                rig.run()
                assert handle.process is not None
                os.kill(handle.process.pid, signal.SIGKILL)  # a ready worker dies: the back-off starts over
                await wait_for(lambda: len(rig.events.of(0, "ready")) == 2, "the respawn after SIGKILL")
            finally:
                watcher.cancel()

            lost = rig.events.of(0, "lost")
            assert [c[3] for c in lost] == [*["exit code 1"] * 3, "killed by SIGKILL"]
            delays = [due - at for due, (at, *_) in zip(seen["next_spawn_at"], lost)]
            expected = [BACKOFF_FIRST_S, 2 * BACKOFF_FIRST_S, 4 * BACKOFF_FIRST_S, BACKOFF_FIRST_S]
            assert delays == pytest.approx(expected, abs=CLOCK_SLACK_S)
            # each respawn waited out its delay, and the tick did not sleep through it
            assert len(seen["spawned_at"]) == 5
            for due, spawned in zip(seen["next_spawn_at"], seen["spawned_at"][1:]):
                assert due <= spawned <= due + TICK_S + 1.0
            assert handle.restarts == {"boot_failure": 3, "crash": 1} and handle.failures == 0
            assert rig.events.status(0).restarts == {"boot_failure": 3, "crash": 1}
            assert handle.history == [c[3] for c in lost]
            assert rig.events.kinds(0) == ["lost", "lost", "lost", "ready", "lost", "ready"]
            assert rig.incarnations(0) == 5

    asyncio.run(scenario())


# ---- 2. a silent worker ----------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_a_silent_worker_is_killed_after_worker_timeout_and_respawned(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Rig(tmp_path, {0: ["silent", "ready"]}, worker_timeout=1.0, ready_timeout=20.0) as rig:
            await rig.supervisor.start()
            handle, spawned_at = rig.handle(), rig.handle().spawned_at
            assert handle.process is not None
            silent_pid = handle.process.pid
            rig.run()
            await wait_for(lambda: len(rig.events.of(0, "ready")) == 2, "the replacement's Ready")

            assert rig.events.kinds(0) == ["ready", "unavailable", "lost", "ready"]
            (ready_at, *_), (unavailable_at, *_) = rig.events.of(0)[:2]
            # its last (only) beat came after the spawn, right after it sent Ready
            assert unavailable_at - spawned_at >= rig.config.worker_timeout
            assert unavailable_at - ready_at <= rig.config.worker_timeout + 2 * TICK_S + 1.0
            assert rig.events.of(0, "lost")[0][3] == "killed by SIGKILL"
            assert not psutil.pid_exists(silent_pid) or psutil.Process(silent_pid).status() == psutil.STATUS_ZOMBIE
            replacement = rig.events.of(0, "ready")[1][3]
            assert replacement != str(silent_pid) and handle.state == "ready"
            assert handle.restarts == {"heartbeat": 1} and handle.history == ["killed by SIGKILL"]
            assert rig.events.status(0).restarts == {"heartbeat": 1} and rig.events.status(0).state == "ready"

    asyncio.run(scenario())


def test_a_respawn_that_beats_but_never_gets_ready_is_killed_after_ready_timeout(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Rig(tmp_path, {0: ["ready", "loading", "ready"]}, worker_timeout=1.0, ready_timeout=2.0) as rig:
            await rig.supervisor.start()
            rig.run()
            handle = rig.handle()
            assert handle.process is not None
            handle.process.kill()  # its respawn loads for ever, beating all the while
            await wait_for(lambda: len(rig.events.of(0, "ready")) == 2, "the third incarnation's Ready", 15.0)
            assert rig.events.kinds(0) == ["ready", "lost", "unavailable", "lost", "ready"]
            (killed_at, *_), (loading_lost_at, *_) = rig.events.of(0, "lost")[:2]
            assert loading_lost_at - killed_at >= rig.config.ready_timeout  # beating bought no more
            # the SIGKILL of a ready worker is a crash; the kill of one stuck loading is the supervisor's
            assert handle.restarts == {"crash": 1, "heartbeat": 1}


    asyncio.run(scenario())


# ---- 3. ready_timeout at start ---------------------------------------------------------------
@pytest.mark.timeout(60)
def test_start_raises_boot_error_naming_a_worker_not_ready_within_ready_timeout(tmp_path: Path) -> None:
    async def scenario() -> None:
        plan = {0: ["ready"], 1: ["silent_at_start"]}
        async with Rig(tmp_path, plan, roles=("primary", "light"), ready_timeout=3.0) as rig:
            began = time.monotonic()
            with pytest.raises(BootError, match=r"worker\(s\) \[1\] not ready after 3s \(ready_timeout\)"):
                await rig.supervisor.start()
            took = time.monotonic() - began
            assert rig.config.ready_timeout <= took <= rig.config.ready_timeout + 2 * TICK_S + 1.0
            assert rig.handle(0).state == "ready" and rig.handle(1).state != "ready"

    asyncio.run(scenario())


# ---- 4. worker_max_batches recycling ---------------------------------------------------------
@pytest.mark.timeout(60)
def test_workers_over_worker_max_batches_are_recycled_one_at_a_time(tmp_path: Path) -> None:
    async def scenario() -> None:
        plan = {0: ["ready"], 1: ["ready"]}
        async with Rig(tmp_path, plan, roles=("light", "light"), worker_max_batches=10, ready_timeout=20.0) as rig:
            for worker in (0, 1):
                rig.set_batches(worker, 10)  # both first incarnations are over the limit at once
            await rig.supervisor.start()
            first_pids = {w: rig.handle(w).ready.pid for w in (0, 1) if rig.handle(w).ready}
            rig.run()
            await wait_for(lambda: all(len(rig.events.of(w, "ready")) == 2 for w in (0, 1)), "both replacements")

            for worker in (0, 1):
                handle = rig.handle(worker)
                assert handle.restarts == {"recycle": 1} and handle.failures == 0 and handle.history == ["clean exit"]
                assert rig.events.states(worker)[-4:] == ["draining", "stopped", "starting", "ready"]
                assert rig.events.kinds(worker) == ["ready", "unavailable", "lost", "ready"]
                # the old incarnation was told to drain and said goodbye before it went
                assert [r[3] for r in rig.log(worker) if r[1] == 0] == ["start", "ready", "drain", "bye"]
                assert handle.ready is not None and handle.ready.pid != first_pids[worker]
            assert sorted(w for w, _ in rig.byes) == [0, 1]
            # one at a time: each is back (Ready) before the other is taken out (unavailable)
            spans = sorted((rig.events.of(w, "unavailable")[0][0], rig.events.of(w, "ready")[1][0]) for w in (0, 1))
            assert spans[0][1] <= spans[1][0]
            assert not rig.events.idle_asked  # each holds only what the other holds too

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_the_only_holder_of_a_model_is_recycled_only_while_idle(tmp_path: Path) -> None:
    async def scenario() -> None:
        plan = {0: ["ready"], 1: ["ready"]}
        async with Rig(tmp_path, plan, roles=("primary", "light"), worker_max_batches=10, ready_timeout=20.0) as rig:
            rig.set_batches(0, 25)  # the primary alone holds "extra"
            rig.events.idle[0] = False
            await rig.supervisor.start()
            primary = rig.handle(0)
            assert primary.ready is not None and {m.name for m in primary.ready.models} == {"main", "extra"}
            first_pid = primary.ready.pid
            rig.run()

            # deferred: over the limit (Stats arrive every 0.1 s) but busy, tick after tick
            await wait_for(lambda: rig.events.idle_asked[0] >= 4, "the supervisor to ask whether worker 0 is idle")
            assert not primary.restarts and primary.state == "ready"
            assert rig.events.kinds(0) == ["ready"] and not rig.byes
            assert "drain" not in [r[3] for r in rig.log(0)]

            rig.events.idle[0] = True
            await wait_for(lambda: len(rig.events.of(0, "ready")) == 2, "the primary's replacement")
            assert primary.restarts == {"recycle": 1} and rig.byes == [(0, "drained")]
            assert rig.events.kinds(0) == ["ready", "unavailable", "lost", "ready"]
            assert primary.ready is not None and primary.ready.pid != first_pid
            assert rig.events.kinds(1) == ["ready"] and not rig.handle(1).restarts

    asyncio.run(scenario())


# ---- 5. fatal exit codes ---------------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize(("mode", "reason"), [("exit3", "boot failure"), ("exit4", "model load failure")])
def test_a_boot_or_load_error_fails_start_and_is_never_respawned(tmp_path: Path, mode: str, reason: str) -> None:
    async def scenario() -> None:
        async with Rig(tmp_path, {0: [mode, "ready"]}, ready_timeout=20.0) as rig:
            with pytest.raises(BootError, match=rf"worker 0 exited with {reason} \(exit code {mode[-1]}\)"):
                await rig.supervisor.start()
            handle = rig.handle()
            assert handle.state == "failed" and handle.process is None
            await asyncio.sleep(4 * BACKOFF_FIRST_S)  # past any back-off: nothing respawns it
            with pytest.raises(SlotLost, match="worker 0"):  # nor does a supervision cycle
                await asyncio.wait_for(rig.supervisor.run(), WAIT_S)
            assert handle.state == "failed" and handle.process is None and not handle.restarts  # never respawned
            assert rig.events.states(0) == ["stopped", "starting", "failed"]
            assert rig.incarnations(0) == 1
            assert [c[1:] for c in rig.events.calls] == [("lost", 0, reason)]

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_a_slot_whose_respawn_cannot_boot_ends_run_with_slot_lost(tmp_path: Path) -> None:
    """After start, a fatal exit leaves the slot down for good: ``run`` must end (the serving
    lifecycle then drains, stops the watchdog pings and exits 1), not supervise a short fleet."""

    async def scenario() -> None:
        plan = {0: ["ready"], 1: ["ready", "exit3"]}
        async with Rig(tmp_path, plan, roles=("light", "light"), ready_timeout=20.0) as rig:
            await rig.supervisor.start()
            rig.run()
            assert rig.runner is not None and rig.handle(1).process is not None
            os.kill(rig.handle(1).process.pid, signal.SIGKILL)
            with pytest.raises(SlotLost, match=r"worker 1 exited with boot failure \(exit code 3\)"):
                await asyncio.wait_for(asyncio.shield(rig.runner), WAIT_S)
            lost_at = rig.events.of(1, "lost")[-1][0]
            assert time.monotonic() - lost_at < WAIT_S
            assert rig.handle(1).state == "failed" and rig.handle(0).state == "ready"
            assert rig.incarnations(1) == 2 and rig.handle(1).restarts == {"crash": 1}
            assert rig.events.status(1).state == "failed"
            rig.runner = None  # its end is this test's subject; stop() still drains worker 0

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_a_spawn_that_raises_ends_run_with_that_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``Popen`` failing (no file descriptors left) is not retried in a loop: ``run`` ends with it."""

    async def scenario() -> None:
        async with Rig(tmp_path, {0: ["ready"]}, ready_timeout=20.0) as rig:
            await rig.supervisor.start()

            def no_fds(*_: object, **__: object) -> None:
                raise OSError(errno.EMFILE, "Too many open files")

            monkeypatch.setattr("appliance.supervisor.subprocess.Popen", no_fds)
            rig.run()
            assert rig.runner is not None and rig.handle().process is not None
            os.kill(rig.handle().process.pid, signal.SIGKILL)  # the respawn, after the back-off, fails
            with pytest.raises(OSError, match="Too many open files"):
                await asyncio.wait_for(asyncio.shield(rig.runner), WAIT_S)
            assert rig.handle().process is None and rig.incarnations(0) == 1
            rig.runner = None

    asyncio.run(scenario())


# ---- 6. a corrupt response ring ----------------------------------------------------------------
def corrupt_next_response(rig: Rig, worker: int) -> None:
    """Write garbage over the header of the oldest unread record in ``worker``'s response ring,
    through a mapping of its own, as a foreign writer would."""
    spec = rig.link.spec(worker)
    segment = Segment.attach(spec.name, HEADER_BYTES)
    responses = HEADER_BYTES + Ring.region_bytes(spec.ring_bytes)  # the layout in segment.py
    counters = segment.view[responses : responses + Ring.HEADER_BYTES].cast("Q")
    try:
        at = responses + Ring.HEADER_BYTES + counters[HEAD_WORD] % spec.ring_bytes
        segment.view[at : at + 8] = (0xDEADBEEF_7FFFFFFF).to_bytes(8, "little")  # a length past the data
    finally:
        counters.release()
        segment.close()


@pytest.mark.timeout(60)
def test_a_corrupt_response_ring_gets_its_worker_replaced_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with Rig(tmp_path, {0: ["ready"]}, worker_timeout=10.0, ready_timeout=20.0) as rig:
            await rig.supervisor.start()
            rig.run()
            handle, channel = rig.handle(), rig.link.channel(0)
            assert handle.process is not None
            first_pid = handle.process.pid
            channel.stop_reader()  # hold the fake's next Stats unread, so that we can spoil it
            await wait_for(channel.responses.pending, "a Stats record to spoil")
            corrupt_next_response(rig, 0)
            rig.link.listen(0)
            # found corrupt after Ring.corrupt_after_s (1 s); then the kill, the back-off, a new fake
            await wait_for(lambda: len(rig.events.of(0, "ready")) == 2, "the replacement's Ready", timeout=10.0)
            await asyncio.sleep(0.5)  # a reader still polling the bad ring would log again meanwhile

            assert rig.events.kinds(0) == ["ready", "unavailable", "lost", "ready"]
            assert rig.events.of(0, "lost")[0][3] == "killed by SIGKILL"
            assert handle.process is not None and handle.process.pid != first_pid
            assert handle.restarts == {"crash": 1}  # a worker whose ring went bad is replaced as crashed
            await wait_for(lambda: handle.stats is not None, "the replacement's Stats through the reset ring")

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    corrupt = [r for r in caplog.records if "corrupt" in r.getMessage()]
    assert [r.name for r in corrupt] == ["appliance.link", "appliance.supervisor"], [r.getMessage() for r in corrupt]
    assert not [r for r in caplog.records if r.name == "asyncio"], "an exception escaped into the event loop"


# ---- 7. what the router is told: slot status and respawns by cause ---------------------------
@pytest.mark.timeout(60)
def test_every_change_of_state_reaches_the_router_with_the_slot_and_respawns_by_cause(tmp_path: Path) -> None:
    async def scenario() -> None:
        slots = [Slot(0, "primary", (0, 1), None), Slot(1, "light", (2,), 1)]
        async with Rig(tmp_path, {0: ["ready"], 1: ["exit1", "ready"]}, slots=slots, ready_timeout=20.0) as rig:
            first = [(w, s.state) for w, s in rig.events.statuses]
            assert first[:2] == [(0, "stopped"), (1, "stopped")]  # told at construction, before any spawn
            await rig.supervisor.start()  # worker 1 exits before its Ready once
            assert rig.events.states(0) == ["stopped", "starting", "ready"]
            assert rig.events.states(1) == ["stopped", "starting", "stopped", "starting", "ready"]
            assert rig.events.status(1).restarts == {"boot_failure": 1} and not rig.events.status(0).restarts

            rig.run()
            assert rig.handle(0).process is not None
            os.kill(rig.handle(0).process.pid, signal.SIGKILL)  # a ready worker dies
            await wait_for(lambda: len(rig.events.of(0, "ready")) == 2, "worker 0's respawn")
            assert rig.events.states(0) == ["stopped", "starting", "ready", "stopped", "starting", "ready"]
            primary, light = rig.events.status(0), rig.events.status(1)
            assert primary == SlotStatus(role="primary", device="cpu", cores=(0, 1), state="ready",
                                         restarts={"crash": 1})  # fmt: skip
            assert light == SlotStatus(role="light", device="cuda:1", cores=(2,), state="ready",
                                       restarts={"boot_failure": 1})  # fmt: skip
        # a shutdown is no respawn: each slot drains and ends stopped with the counts it had
        assert [rig.events.states(w)[-2:] for w in (0, 1)] == [["draining", "stopped"]] * 2
        assert rig.events.status(0).restarts == {"crash": 1}

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_a_heartbeat_kill_logs_kill_exit_and_respawn_events(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> int:
        async with Rig(tmp_path, {0: ["silent", "ready"]}, worker_timeout=1.0, ready_timeout=20.0) as rig:
            await rig.supervisor.start()
            assert rig.handle().process is not None
            silent_pid = rig.handle().process.pid  # type: ignore[union-attr]
            rig.run()
            await wait_for(lambda: len(rig.events.of(0, "ready")) == 2, "the replacement's Ready")
            return silent_pid

    with caplog.at_level(logging.INFO, logger="appliance.supervisor"):
        silent_pid = asyncio.run(scenario())
    logged = [(r.event, vars(r)) for r in caplog.records if hasattr(r, "event")]  # type: ignore[attr-defined]
    names = [name for name, _ in logged]
    assert names[:2] == ["worker_spawn", "worker_ready"] and names.count("worker_spawn") == 2
    kill = next(fields for name, fields in logged if name == "worker_kill")
    exit_ = next(fields for name, fields in logged if name == "worker_exit")
    respawn = next(fields for name, fields in logged if name == "worker_respawn_scheduled")
    assert (kill["worker"], kill["pid"], kill["cause"]) == (0, silent_pid, "heartbeat") and "silent" in kill["reason"]
    assert (exit_["pid"], exit_["cause"], exit_["reason"]) == (silent_pid, "heartbeat", "killed by SIGKILL")
    assert respawn["delay_s"] == BACKOFF_FIRST_S
    assert names.index("worker_kill") < names.index("worker_exit") < names.index("worker_respawn_scheduled")


# ---- 8. the environment a worker starts with -------------------------------------------------
@pytest.mark.timeout(60)
def test_a_worker_starts_with_numpys_blas_pool_sized_to_its_slot(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """numpy loads in a worker before the worker can pin itself (its first imports reach
    ``appliance.protocol``), so the spawner's environment must size OpenBLAS's pool to the slot,
    over whatever the gateway's own environment says. One core: OpenBLAS caps its pool at the
    machine's cores, so only a slot smaller than the machine shows the difference."""
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "7")
    (tmp_path / "report-blas").touch()

    async def scenario() -> None:
        async with Rig(tmp_path, {0: ["ready"]}, slots=[Slot(0, "primary", (0,))]) as rig:
            await rig.supervisor.start()

    asyncio.run(scenario())
    assert [event for *_, event in Rig.log_of(tmp_path) if event.startswith("blas=")] == ["blas=1"]
