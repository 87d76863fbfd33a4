"""Spawns, watches, restarts and stops the worker processes.

One ``Channel`` per device slot, created here (mode 0600, unlinked at exit). Workers are fresh
interpreters (spawn semantics: never fork after torch import) started with the channel's
eventfds inherited. The gateway learns about workers only through ``WorkerEvents``; the
supervisor never imports the gateway.

The supervision cycle (``tick``) is gunicorn's: reap dead workers -> kill silent ones -> spawn
to the target. Exits are noticed at once through a pidfd on the event loop, and by the tick
(every ``TICK_S``) as a backstop. A worker that exits with a boot or model-load code is not
respawned: that would cycle forever on a bad config.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import msgspec

from appliance.config import Config
from appliance.guards import recycle_reason
from appliance.ipc.channel import Channel
from appliance.protocol import (
    EXIT_BOOT_ERROR,
    EXIT_LOAD_ERROR,
    EXIT_OK,
    EXIT_PARENT_GONE,
    Bye,
    Drain,
    Failed,
    Ready,
    RequestCodec,
    ResponseCodec,
    Scores,
    Stats,
    Vectors,
    WorkerSpec,
)

log = logging.getLogger("appliance.supervisor")

TICK_S = 0.25
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
KILL_WAIT_S = 5.0
FATAL_EXITS = {EXIT_BOOT_ERROR: "boot failure", EXIT_LOAD_ERROR: "model load failure"}


class SlotLike(Protocol):
    index: int
    role: str
    cores: Sequence[int]
    gpu: int | None


class WorkerEvents(Protocol):
    """What the gateway's router hears from the supervisor (called on the event loop)."""

    def worker_ready(self, worker: int, ready: Ready) -> None: ...

    def worker_result(self, worker: int, message: Vectors | Scores | Failed) -> None: ...

    def worker_stats(self, worker: int, stats: Stats) -> None: ...

    def worker_unavailable(self, worker: int) -> None:
        """Route no new work to it (it is draining or being replaced); results may still come."""

    def worker_lost(self, worker: int, reason: str) -> None:
        """No result will ever come from it again: resend or fail what it held."""


class BootError(RuntimeError):
    """A worker could not boot or load its models; serving cannot start."""


@dataclass(slots=True)
class WorkerHandle:
    slot: SlotLike
    channel: Channel
    state: str = "stopped"  # stopped | starting | ready | draining | failed
    process: subprocess.Popen[bytes] | None = None
    pidfd: int = -1
    ready: Ready | None = None
    stats: Stats | None = None
    spawned_at: float = 0.0
    next_spawn_at: float = 0.0
    failures: int = 0  # consecutive unplanned exits, for back-off
    restarts: int = 0
    recycles: int = 0  # planned replacements (RSS or batch limit)
    last_beat: int = -1
    last_beat_at: float = 0.0
    exit_code: int | None = None
    planned_exit: bool = False  # drained on purpose (recycle or shutdown): not a failure
    history: list[str] = field(default_factory=list)

    @property
    def index(self) -> int:
        return self.slot.index


class Supervisor:
    def __init__(self, config: Config, slots: Sequence[SlotLike], events: WorkerEvents,
                 worker_argv: Sequence[str] | None = None) -> None:  # fmt: skip
        self.config = config
        self.events = events
        self.worker_argv = list(worker_argv or [sys.executable, "-m", "workers.main"])
        self.handles = [WorkerHandle(slot, Channel.create(config.ring_bytes)) for slot in slots]
        self.requests = RequestCodec()
        self.responses = ResponseCodec()
        self.stopping = False
        self.fatal: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()

    # ---- start -------------------------------------------------------------------------
    async def start(self) -> None:
        """Spawn every worker and wait for each ``Ready``; raise ``BootError`` if one cannot boot."""
        self._loop = asyncio.get_running_loop()
        for handle in self.handles:
            self.spawn(handle)
        deadline = time.monotonic() + self.config.ready_timeout
        while not all(h.state == "ready" for h in self.handles):
            if self.fatal:
                raise BootError(self.fatal)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                slow = [h.index for h in self.handles if h.state != "ready"]
                raise BootError(f"worker(s) {slow} not ready after {self.config.ready_timeout:.0f}s (ready_timeout)")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, TICK_S))
            except asyncio.TimeoutError:
                self.tick()

    def spawn(self, handle: WorkerHandle) -> None:
        spec = self.worker_spec(handle)
        argv = [*self.worker_argv, msgspec.json.encode(spec).decode()]
        handle.process = subprocess.Popen(argv, pass_fds=handle.channel.pass_fds, stdin=subprocess.DEVNULL)
        handle.state, handle.ready, handle.exit_code, handle.planned_exit = "starting", None, None, False
        handle.stats = None  # the last incarnation's counters must not trigger a recycle
        handle.spawned_at = handle.last_beat_at = time.monotonic()
        handle.last_beat = handle.channel.heartbeat()
        handle.channel.start_reader(self.loop, lambda records, h=handle: self.on_records(h, records))
        self.watch_exit(handle)
        log.info("worker %d (%s) spawned: pid %d, cores %s, gpu %s", handle.index, handle.slot.role,
                 handle.process.pid, list(handle.slot.cores), handle.slot.gpu)  # fmt: skip

    def worker_spec(self, handle: WorkerHandle) -> WorkerSpec:
        c = self.config
        return WorkerSpec(
            worker=handle.index, role=handle.slot.role, cores=list(handle.slot.cores), gpu=handle.slot.gpu,
            channel=handle.channel.spec, models=list(c.models), state_dir=c.state_dir,
            max_batch_tokens=c.max_batch_tokens, max_batch_size=c.max_batch_size, max_wait_us=c.max_wait_us,
            log_level=c.log_level, parent_pid=os.getpid(),
        )  # fmt: skip

    def watch_exit(self, handle: WorkerHandle) -> None:
        # A pidfd becomes readable the moment the process exits: detection without polling.
        assert handle.process is not None
        try:
            handle.pidfd = os.pidfd_open(handle.process.pid)
        except (AttributeError, OSError):
            handle.pidfd = -1  # old kernel: the tick's poll() still notices within TICK_S
            return
        self.loop.add_reader(handle.pidfd, self.reap)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    # ---- messages from workers ---------------------------------------------------------
    def on_records(self, handle: WorkerHandle, records: list[bytes]) -> None:
        decode = self.responses.decode
        for record in records:
            message = decode(record)
            if isinstance(message, (Vectors, Scores, Failed)):
                self.events.worker_result(handle.index, message)
            elif isinstance(message, Stats):
                handle.stats = message
                self.events.worker_stats(handle.index, message)
            elif isinstance(message, Ready):
                self.on_ready(handle, message)
            elif isinstance(message, Bye):
                log.info("worker %d drained (%s)", handle.index, message.reason)

    def on_ready(self, handle: WorkerHandle, ready: Ready) -> None:
        handle.ready, handle.state, handle.failures = ready, "ready", 0
        models = ", ".join(m.name for m in ready.models)
        log.info("worker %d ready in %.1fs: pid %d, %s, models: %s", handle.index,
                 time.monotonic() - handle.spawned_at, ready.pid, ready.device, models)  # fmt: skip
        self.events.worker_ready(handle.index, ready)
        self._changed.set()

    # ---- the supervision cycle -----------------------------------------------------------
    async def run(self) -> None:
        """Supervise until ``stop``: one readable cycle per tick."""
        while not self.stopping:
            self.tick()
            await asyncio.sleep(TICK_S)

    def tick(self) -> None:
        self.reap()
        self.kill_silent()
        self.recycle_bloated()
        self.spawn_missing()

    def reap(self) -> None:
        for handle in self.handles:
            if handle.process is not None and handle.process.poll() is not None:
                self.on_exit(handle, handle.process.returncode)

    def on_exit(self, handle: WorkerHandle, code: int) -> None:
        self.unwatch(handle)
        # Results the worker finished before it died are still in the ring: deliver them first.
        self.on_records(handle, handle.channel.poll_responses())
        handle.channel.stop_reader()
        handle.channel.reset()
        handle.process, handle.exit_code, handle.ready = None, code, None
        reason = describe_exit(code)
        handle.history.append(reason)
        self.events.worker_lost(handle.index, reason)
        self._changed.set()
        if self.stopping:
            handle.state = "stopped"
            return
        if code in FATAL_EXITS:
            handle.state = "failed"
            self.fatal = (f"worker {handle.index} exited with {reason} (exit code {code}); not respawning it. "
                          "Its log lines above name the model and path.")  # fmt: skip
            log.error(self.fatal)
            return
        self.schedule_respawn(handle, reason)

    def schedule_respawn(self, handle: WorkerHandle, reason: str) -> None:
        if handle.planned_exit:
            delay = 0.0
        else:
            delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2**handle.failures)
            handle.failures += 1
            log.warning("worker %d %s; respawning in %.1fs", handle.index, reason, delay)
        handle.state = "stopped"
        handle.next_spawn_at = time.monotonic() + delay
        handle.restarts += 1

    def unwatch(self, handle: WorkerHandle) -> None:
        if handle.pidfd >= 0:
            self.loop.remove_reader(handle.pidfd)
            os.close(handle.pidfd)
            handle.pidfd = -1

    def kill_silent(self) -> None:
        now = time.monotonic()
        for handle in self.handles:
            if handle.process is None:
                continue
            beat = handle.channel.heartbeat()
            if beat != handle.last_beat:
                handle.last_beat, handle.last_beat_at = beat, now
                continue
            limit = self.config.ready_timeout if handle.state == "starting" else self.config.worker_timeout
            if now - handle.last_beat_at > limit:
                log.error("worker %d silent for %.1fs (limit %.1fs); killing it", handle.index,
                          now - handle.last_beat_at, limit)  # fmt: skip
                self.events.worker_unavailable(handle.index)
                handle.process.kill()

    def recycle_bloated(self) -> None:
        """Replace a worker past its RSS or batch limit, one at a time: while any slot is not
        ready, none is taken out, so a planned replacement never leaves two slots empty."""
        if self.stopping or any(h.state != "ready" for h in self.handles):
            return
        for handle in self.handles:
            reason = recycle_reason(self.config, handle.stats) if handle.stats else None
            if reason:
                handle.recycles += 1
                self.recycle(handle.index, reason)
                return

    def spawn_missing(self) -> None:
        if self.stopping:
            return
        now = time.monotonic()
        for handle in self.handles:
            if handle.state == "stopped" and handle.process is None and now >= handle.next_spawn_at:
                self.spawn(handle)

    # ---- sending -------------------------------------------------------------------------
    def channel(self, worker: int) -> Channel:
        return self.handles[worker].channel

    def is_ready(self, worker: int) -> bool:
        return self.handles[worker].state == "ready"

    def recycle(self, worker: int, reason: str) -> None:
        """Planned replacement: no new work, finish what it holds, exit, respawn at once."""
        handle = self.handles[worker]
        if handle.state != "ready":
            return
        log.info("recycling worker %d: %s", worker, reason)
        handle.state, handle.planned_exit = "draining", True
        self.events.worker_unavailable(worker)
        self.send_drain(handle, reason)

    def send_drain(self, handle: WorkerHandle, reason: str) -> None:
        if not handle.channel.send_request(self.requests.encode(Drain(reason))) and handle.process:
            handle.process.terminate()  # ring full: SIGTERM is the worker's other way to drain

    # ---- stop ----------------------------------------------------------------------------
    async def stop(self, grace: float) -> None:
        """Drain every worker (up to ``grace`` s), kill what remains, unlink every segment."""
        self.stopping = True
        for handle in self.handles:
            if handle.process is not None:
                handle.planned_exit = True
                self.send_drain(handle, "shutdown")
        await self.wait_exits(grace)
        for handle in self.handles:
            if handle.process is not None:
                log.warning("worker %d did not drain within %.1fs; killing it", handle.index, grace)
                handle.process.kill()
        await self.wait_exits(KILL_WAIT_S)
        self.close()

    async def wait_exits(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while any(h.process is not None for h in self.handles) and time.monotonic() < deadline:
            self.reap()
            await asyncio.sleep(0.05)
        self.reap()

    def close(self) -> None:
        for handle in self.handles:
            self.unwatch(handle)
            handle.channel.stop_reader()
            handle.channel.close()
            handle.channel.unlink()

    def kill_all(self) -> None:
        """Last resort (second signal): no draining."""
        for handle in self.handles:
            if handle.process is not None and handle.process.poll() is None:
                handle.process.send_signal(signal.SIGKILL)


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    if code in FATAL_EXITS:
        return FATAL_EXITS[code]
    if code == EXIT_PARENT_GONE:
        return "exit: gateway gone"
    return "clean exit" if code == EXIT_OK else f"exit code {code}"
