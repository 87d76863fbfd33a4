"""Spawns, watches, restarts and stops the worker processes.

Each worker slot has a channel in the ``WorkerLink`` (``appliance/link.py``), which owns the
segments; the supervisor hears its workers' ``Ready``, ``Stats`` and ``Bye`` through it and reads
their heartbeats from it. Workers are fresh interpreters (spawn semantics: never fork after torch
import) started with ``worker_command``, the channel's eventfds inherited and the slot's native
thread-pool sizes in the environment (``appliance.slots.thread_env``). The gateway learns
about workers only through ``WorkerEvents``; the supervisor never imports the gateway or the
workers package (the composition root, ``appliance/cli.py``, names the worker's entry point).

The supervision cycle (``tick``) is gunicorn's: reap dead workers -> kill silent ones -> recycle
a bloated one -> spawn to the target. Exits are noticed at once through a pidfd on the event loop, and by the tick
(every ``TICK_S``) as a backstop. A worker that exits with a boot or model-load code is not
respawned: that would cycle forever on a bad config.

Every change of a slot's state goes through ``set_state``, which tells the router the slot's
``SlotStatus`` (role, device, cores, state, respawns by cause): that is how ``GET /stats`` learns
them without the gateway reading the supervisor. Each respawn is counted once, by why its
predecessor went (``exit_cause``): ``heartbeat`` for a worker killed as silent or stuck loading,
``recycle`` for a planned replacement, ``boot_failure`` for an exit before ``Ready``, ``crash``
for any other exit of a ready worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import msgspec

from appliance.config import Config
from appliance.guards import recycle_reason
from appliance.ipc.ring import RingCorrupted
from appliance.link import WorkerLink
from appliance.protocol import (
    EXIT_BOOT_ERROR,
    EXIT_LOAD_ERROR,
    EXIT_OK,
    EXIT_PARENT_GONE,
    Bye,
    Drain,
    Ready,
    RestartCause,
    SlotState,
    SlotStatus,
    Stats,
    WorkerSpec,
)
from appliance.slots import Slot, thread_env

log = logging.getLogger("appliance.supervisor")

TICK_S = 0.25
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
KILL_WAIT_S = 5.0
FATAL_EXITS = {EXIT_BOOT_ERROR: "boot failure", EXIT_LOAD_ERROR: "model load failure"}


class WorkerEvents(Protocol):
    """What the gateway's router hears from the supervisor (called on the event loop)."""

    def worker_ready(self, worker: int, ready: Ready) -> None: ...

    def worker_idle(self, worker: int) -> bool:
        """No work of the gateway's is outstanding on it."""
        ...

    def worker_unavailable(self, worker: int) -> None:
        """Route no new work to it (it is draining or being replaced); results may still come."""

    def worker_lost(self, worker: int, reason: str) -> None:
        """No result will ever come from it again: resend or fail what it held."""

    def worker_status(self, worker: int, status: SlotStatus) -> None:
        """The slot's state or restart counts changed (and once per slot at construction)."""


class BootError(RuntimeError):
    """A worker could not boot or load its models; serving cannot start."""


class SlotLost(RuntimeError):
    """After start, a slot's worker exited with a boot or model-load code: that slot stays down,
    so ``run`` ends with this and the appliance stops rather than serve short of a worker."""


@dataclass(slots=True)
class WorkerHandle:
    slot: Slot
    state: SlotState = "stopped"  # a stopped slot's respawn is due at next_spawn_at
    process: subprocess.Popen[bytes] | None = None
    pidfd: int = -1
    ready: Ready | None = None
    stats: Stats | None = None
    spawned_at: float = 0.0
    next_spawn_at: float = 0.0
    failures: int = 0  # consecutive unplanned exits, for back-off
    restarts: Counter[RestartCause] = field(default_factory=Counter)  # respawns by why the predecessor went
    kill_cause: RestartCause | None = None  # set when the supervisor kills this incarnation, and why
    last_beat: int = -1
    last_beat_at: float = 0.0
    exit_code: int | None = None
    planned_exit: bool = False  # drained on purpose (recycle or shutdown): not a failure
    history: list[str] = field(default_factory=list)

    @property
    def index(self) -> int:
        return self.slot.index


class Supervisor:
    def __init__(self, config: Config, slots: Sequence[Slot], link: WorkerLink, events: WorkerEvents,
                 worker_command: Sequence[str]) -> None:  # fmt: skip
        """``worker_command`` starts one worker; its ``WorkerSpec`` JSON is appended as the last
        argument. ``link`` must have one channel per slot (open before ``start``)."""
        self.config = config
        self.link = link
        self.events = events
        self.worker_command = list(worker_command)
        self.handles = [WorkerHandle(slot) for slot in slots]
        for handle in self.handles:
            events.worker_status(handle.index, slot_status(handle))
        link.subscribe(Ready, self.on_ready)
        link.subscribe(Stats, self.on_stats)
        link.subscribe(Bye, self.on_bye)
        link.subscribe(RingCorrupted, self.on_corrupt)
        self.stopping = False
        self.fatal: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()
        self._lost = asyncio.Event()  # a slot went `failed`: wakes `run` at once

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
                raise BootError(f"worker(s) {slow} not ready after {self.config.ready_timeout:g}s (ready_timeout)")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, TICK_S))
            except asyncio.TimeoutError:
                self.tick()

    def spawn(self, handle: WorkerHandle) -> None:
        spec = self.worker_spec(handle)
        argv = [*self.worker_command, msgspec.json.encode(spec).decode()]
        handle.process = subprocess.Popen(argv, pass_fds=self.link.pass_fds(handle.index), stdin=subprocess.DEVNULL,
                                          env=worker_env(handle.slot))  # fmt: skip
        handle.ready, handle.exit_code, handle.planned_exit, handle.kill_cause = None, None, False, None
        self.set_state(handle, "starting")
        handle.stats = None  # the last incarnation's counters must not trigger a recycle
        handle.spawned_at = handle.last_beat_at = time.monotonic()
        handle.last_beat = self.link.heartbeat(handle.index)
        self.link.listen(handle.index)
        self.watch_exit(handle)
        log.info("worker %d (%s) spawned: pid %d, cores %s, gpu %s", handle.index, handle.slot.role,
                 handle.process.pid, list(handle.slot.cores), handle.slot.gpu,
                 extra={"event": "worker_spawn", "worker": handle.index, "role": handle.slot.role,
                        "pid": handle.process.pid, "cores": list(handle.slot.cores), "gpu": handle.slot.gpu})  # fmt: skip

    def worker_spec(self, handle: WorkerHandle) -> WorkerSpec:
        c = self.config
        return WorkerSpec(
            worker=handle.index, role=handle.slot.role, cores=list(handle.slot.cores), gpu=handle.slot.gpu,
            channel=self.link.spec(handle.index), models=list(c.models), state_dir=c.state_dir,
            max_batch_tokens=c.max_batch_tokens, max_batch_size=c.max_batch_size, max_wait_us=c.max_wait_us,
            log_level=c.log_level, parent_pid=os.getpid(),
            borrows_cores=c.lend_idle_cores and handle.slot.gpu is None,
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

    def set_state(self, handle: WorkerHandle, state: SlotState) -> None:
        """The one place a slot changes state: the router hears every change."""
        handle.state = state
        self.events.worker_status(handle.index, slot_status(handle))

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    # ---- messages from workers (through the link) ----------------------------------------
    def on_ready(self, worker: int, ready: Ready) -> None:
        handle = self.handles[worker]
        handle.ready, handle.failures = ready, 0
        self.set_state(handle, "ready")
        models = ", ".join(m.name for m in ready.models)
        load_s = time.monotonic() - handle.spawned_at
        log.info("worker %d ready in %.1fs: pid %d, %s, models: %s", worker, load_s, ready.pid, ready.device, models,
                 extra={"event": "worker_ready", "worker": worker, "pid": ready.pid, "device": ready.device,
                        "models": [m.name for m in ready.models], "load_s": round(load_s, 3)})  # fmt: skip
        self.events.worker_ready(worker, ready)
        self._changed.set()

    def on_stats(self, worker: int, stats: Stats) -> None:
        self.handles[worker].stats = stats

    def on_bye(self, worker: int, bye: Bye) -> None:
        log.info("worker %d drained (%s)", worker, bye.reason,
                 extra={"event": "worker_drained", "worker": worker, "reason": bye.reason})  # fmt: skip

    def on_corrupt(self, worker: int, error: RingCorrupted) -> None:
        """Nothing more can be read from this worker: replace it. Its exit goes the usual way
        (``on_exit``: its parts resent, both rings reset for the successor, back-off)."""
        handle = self.handles[worker]
        if handle.process is None:
            return
        log.error("worker %d (pid %d): its response ring is corrupt; killing it", worker, handle.process.pid,
                  extra={"event": "worker_kill", "worker": worker, "pid": handle.process.pid, "cause": "ring_corrupt",
                         "reason": str(error)})  # fmt: skip
        self.events.worker_unavailable(worker)
        handle.kill_cause = handle.kill_cause or "crash"  # the worker wrote what no worker should
        handle.process.kill()

    # ---- the supervision cycle -----------------------------------------------------------
    async def run(self) -> None:
        """Supervise until ``stop``: one readable cycle per tick. Ends with ``SlotLost`` when a
        slot is lost for good, and with whatever ``tick`` raises (say ``OSError`` from a spawn):
        the caller stops the appliance either way."""
        while not self.stopping:
            self.tick()
            self.check_slots()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._lost.wait(), TICK_S)

    def check_slots(self) -> None:
        if self.fatal and not self.stopping:
            raise SlotLost(self.fatal)

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
        self.link.flush(handle.index)
        self.link.reset(handle.index)
        log.info("worker %d (pid %d) exited: %s", handle.index, handle.process.pid, describe_exit(code),
                 extra={"event": "worker_exit", "worker": handle.index, "pid": handle.process.pid, "code": code,
                        "reason": describe_exit(code),
                        "cause": "planned" if handle.planned_exit else exit_cause(handle)})  # fmt: skip
        handle.process, handle.exit_code, handle.ready = None, code, None
        reason = describe_exit(code)
        handle.history.append(reason)
        self.events.worker_lost(handle.index, reason)
        self._changed.set()
        if self.stopping:
            self.set_state(handle, "stopped")
            return
        if code in FATAL_EXITS:
            self.set_state(handle, "failed")
            self.fatal = (f"worker {handle.index} exited with {reason} (exit code {code}); not respawning it. "
                          "Its log lines above name the model and path.")  # fmt: skip
            log.error(self.fatal, extra={"event": "worker_slot_lost", "worker": handle.index, "code": code,
                                         "reason": reason})  # fmt: skip
            self._lost.set()
            return
        self.schedule_respawn(handle, reason)

    def schedule_respawn(self, handle: WorkerHandle, reason: str) -> None:
        cause = exit_cause(handle)
        handle.restarts[cause] += 1
        if handle.planned_exit:
            delay = 0.0  # a recycle: no back-off
        else:
            delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2**handle.failures)
            handle.failures += 1
            log.warning("worker %d %s; respawning in %.1fs", handle.index, reason, delay,
                        extra={"event": "worker_respawn_scheduled", "worker": handle.index, "reason": reason,
                               "cause": cause, "delay_s": delay, "failures": handle.failures})  # fmt: skip
        handle.next_spawn_at = time.monotonic() + delay
        self.set_state(handle, "stopped")

    def unwatch(self, handle: WorkerHandle) -> None:
        if handle.pidfd >= 0:
            self.loop.remove_reader(handle.pidfd)
            os.close(handle.pidfd)
            handle.pidfd = -1

    def kill_silent(self) -> None:
        """Kill a worker whose heartbeat stalled for ``worker_timeout`` (workers beat from a
        thread of their own while they load, so a long load is not silence), or one still not
        ready ``ready_timeout`` after its spawn (a load that hangs while the heartbeat goes on)."""
        now = time.monotonic()
        for handle in self.handles:
            if handle.process is None:
                continue
            reason = self.why_stuck(handle, now)
            if reason:
                log.error("worker %d %s; killing it", handle.index, reason,
                          extra={"event": "worker_kill", "worker": handle.index, "pid": handle.process.pid,
                                 "cause": "heartbeat", "reason": reason})  # fmt: skip
                self.events.worker_unavailable(handle.index)
                handle.kill_cause = "heartbeat"
                handle.process.kill()

    def why_stuck(self, handle: WorkerHandle, now: float) -> str | None:
        beat = self.link.heartbeat(handle.index)
        if beat != handle.last_beat:
            handle.last_beat, handle.last_beat_at = beat, now
        elif now - handle.last_beat_at > self.config.worker_timeout:
            return f"silent for {now - handle.last_beat_at:.1f}s (worker_timeout {self.config.worker_timeout:g}s)"
        if handle.state == "starting" and now - handle.spawned_at > self.config.ready_timeout:
            return f"not ready {now - handle.spawned_at:.1f}s after its spawn (ready_timeout {self.config.ready_timeout:g}s)"
        return None

    def recycle_bloated(self) -> None:
        """Replace a worker past its RSS or batch limit, one at a time and never leaving a model
        unserved: while any slot is not ready none is taken out, and the only holder of a model
        (a single worker, or the primary for its extra models) is taken out only while idle."""
        if self.stopping or any(h.state != "ready" for h in self.handles):
            return
        for handle in self.handles:
            reason = recycle_reason(self.config, handle.stats) if handle.stats else None
            if reason and self.can_take_out(handle):
                self.recycle(handle.index, reason)
                return

    def can_take_out(self, handle: WorkerHandle) -> bool:
        """Every model it holds has another ready holder, or nothing is waiting on it."""
        others = {m.name for h in self.handles if h is not handle and h.ready for m in h.ready.models}
        held = {m.name for m in handle.ready.models} if handle.ready else set()
        return held <= others or self.events.worker_idle(handle.index)

    def spawn_missing(self) -> None:
        if self.stopping:
            return
        now = time.monotonic()
        for handle in self.handles:
            if handle.state == "stopped" and handle.process is None and now >= handle.next_spawn_at:
                self.spawn(handle)

    # ---- planned exits -----------------------------------------------------------------
    def is_ready(self, worker: int) -> bool:
        return self.handles[worker].state == "ready"

    def recycle(self, worker: int, reason: str) -> None:
        """Planned replacement: no new work, finish what it holds, exit, respawn at once."""
        handle = self.handles[worker]
        if handle.state != "ready":
            return
        log.info("recycling worker %d: %s", worker, reason, extra={"event": "worker_recycle", "worker": worker,
                 "pid": handle.process.pid if handle.process else None, "reason": reason})  # fmt: skip
        handle.planned_exit = True
        self.set_state(handle, "draining")
        self.events.worker_unavailable(worker)
        self.send_drain(handle, reason)

    def send_drain(self, handle: WorkerHandle, reason: str) -> None:
        if not self.link.send(handle.index, Drain(reason)) and handle.process:
            handle.process.terminate()  # ring full: SIGTERM is the worker's other way to drain

    # ---- stop ----------------------------------------------------------------------------
    async def stop(self, grace: float) -> None:
        """Drain every worker (up to ``grace`` s) and kill what remains. The link's owner closes
        the channels afterwards."""
        self.stopping = True
        for handle in self.handles:
            if handle.process is not None:
                handle.planned_exit = True
                self.set_state(handle, "draining")
                self.send_drain(handle, "shutdown")
        await self.wait_exits(grace)
        for handle in self.handles:
            if handle.process is not None:
                log.warning("worker %d did not drain within %.1fs; killing it", handle.index, grace,
                            extra={"event": "worker_kill", "worker": handle.index, "pid": handle.process.pid,
                                   "cause": "drain_timeout", "reason": f"not drained within {grace:.1f}s"})  # fmt: skip
                handle.process.kill()
        await self.wait_exits(KILL_WAIT_S)
        self.unwatch_all()

    async def wait_exits(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while any(h.process is not None for h in self.handles) and time.monotonic() < deadline:
            self.reap()
            await asyncio.sleep(0.05)
        self.reap()

    def unwatch_all(self) -> None:
        for handle in self.handles:
            self.unwatch(handle)

    def kill_all(self) -> None:
        """Last resort (second signal): no draining."""
        for handle in self.handles:
            if handle.process is not None and handle.process.poll() is None:
                handle.process.send_signal(signal.SIGKILL)


def exit_cause(handle: WorkerHandle) -> RestartCause:
    """Why the incarnation that just exited went, read before its slot's state changes."""
    if handle.kill_cause is not None:
        return handle.kill_cause
    if handle.planned_exit:
        return "recycle"
    return "boot_failure" if handle.state == "starting" else "crash"


def worker_env(slot: Slot) -> dict[str, str]:
    """This process's environment with ``slot``'s thread-pool sizes: the worker pins itself too,
    but only after its first imports, numpy's OpenBLAS among them, have sized their pools."""
    return {**os.environ, **thread_env(slot)}


def slot_status(handle: WorkerHandle) -> SlotStatus:
    slot = handle.slot
    device = "cpu" if slot.gpu is None else f"cuda:{slot.gpu}"
    return SlotStatus(role=slot.role, device=device, cores=tuple(slot.cores), state=handle.state,
                      restarts=dict(handle.restarts))  # fmt: skip


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
