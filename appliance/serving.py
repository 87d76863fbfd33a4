"""How a composed appliance starts, serves and stops: every resource is an aiohttp cleanup context.

``serve(config, compose)`` runs, in order:

0. The instance lock (``appliance/instance.py``): one appliance per ``state_dir``. A second one
   exits 2 with one line naming the lock file and the holder's pid, before anything below.
1. ``compose(config)`` builds every object (``appliance/cli.py``); nothing is started yet, and a
   bad preload or API-keys file fails here, before anything needs undoing.
2. The listening socket is bound before any model loads: a port in use fails in milliseconds,
   not after a minute of loading models.
3. ``runner.setup()`` enters the app's cleanup contexts in order: **state** (open the job store),
   **workers** (sweep segments a crashed run left, open the link's channels, spawn the workers,
   wait for every ``Ready``), **supervision** (the supervisor's cycle as a task), **guard** (the
   memory sampler), **preload** (fill the cache), **background** (the job runner) and
   **watchdog** (systemd pings while supervision is healthy).
4. The site starts on the bound socket; ``READY=1``; serve until SIGTERM/SIGINT or until the
   supervision task dies.
5. ``runner.cleanup()`` closes the listener, lets running handlers finish, then leaves the
   contexts in reverse: the watchdog stops, ..., the workers context drains in-flight work,
   stops the workers and unlinks every segment.

Step 5 also runs when any of steps 3-4 fails, for the contexts entered so far (aiohttp's
``CleanupContext`` keeps them), so a failed start leaves no worker and no ``/dev/shm`` segment
behind and exits non-zero with one line that says why. One shutdown budget
(``shutdown_grace``) is shared by the stages of step 5 rather than granted to each: aiohttp's
wait for running handlers gets it first (``handler_wait``), the drain and the workers' stop get
what is left (``Parts.remaining``), and the supervisor adds at most ``KILL_WAIT_S`` after SIGKILL.
A worker that never answers ``Drain`` (hung in a batch, stopped) costs that total and no more:
``systemd/appliance.service``'s ``TimeoutStopSec`` is sized above it.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol

from aiohttp import web

from appliance import sdnotify
from appliance.config import Config
from appliance.guards import MemoryGuard
from appliance.instance import InstanceLock, InstanceLocked
from appliance.ipc.segment import sweep_stale_segments
from appliance.link import WorkerLink
from appliance.startup import StartupError
from appliance.supervisor import BootError, SlotLost, Supervisor

log = logging.getLogger("appliance")

LISTEN_BACKLOG = 1024
# The collector's youngest generation runs once tracked objects outnumber the freed by this many.
# A request allocates a few hundred (futures, a task, coroutines, dicts) and frees nearly all of
# them by reference counting; at Python's default of 700 the gateway ran a young collection every
# few requests, about a tenth of the backend's CPU per request (34.5 against 38.5 us in-process).
GC_YOUNG_THRESHOLD = 10_000


class StartAborted(RuntimeError):
    """A stop signal came while the appliance was still starting."""


class Background(Protocol):
    """Bulk work with state of its own (the gateway's jobs): opened before any model loads (a
    bad state fails the start at once), started once the workers serve, stopped before them."""

    async def open(self) -> None: ...
    def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def close(self) -> None: ...


class Drainable(Protocol):
    """What the lifecycle needs of the router: stop taking work, then wait for what is in flight."""

    draining: bool

    async def wait_idle(self, timeout: float) -> bool: ...


@dataclass
class Parts:
    """A composed appliance: the objects ``compose`` built, none of them started."""

    config: Config
    link: WorkerLink
    supervisor: Supervisor
    router: Drainable
    guard: MemoryGuard
    app: web.Application
    # fills the cache (takes "stopping?"); a preload file naming a model not served is a StartupError
    preload: Callable[[Callable[[], bool]], Awaitable[int]]
    background: Background
    # the app's runner class: the gateway's bounds its connections (keep-alive, body-read and
    # write timeouts, the connection cap) and chooses its access log; where none is given, a plain
    # AppRunner without aiohttp's access log (one INFO line per request otherwise)
    runner_factory: Callable[..., web.AppRunner] = functools.partial(web.AppRunner, access_log=None)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    shutdown_deadline: float = 0.0  # time.monotonic() by which everything must have stopped
    failure: str = ""  # why the appliance stopped on its own (a dead supervision task)

    def remaining(self) -> float:
        """What is left of the one shutdown budget."""
        return max(0.0, self.shutdown_deadline - time.monotonic())

    def begin_shutdown(self) -> None:
        if not self.shutdown_deadline:
            self.shutdown_deadline = time.monotonic() + self.config.shutdown_grace


PARTS = web.AppKey("parts", Parts)


async def serve(config: Config, compose: Callable[[Config], Parts]) -> int:
    """Start, serve until a stop, stop; the process's exit code. Holds the instance lock
    throughout, taken before anything else: a second appliance on this state_dir starts,
    binds and sweeps nothing."""
    log.info("starting on %s:%d: models %s, workers %s", config.host, config.port,
             ", ".join(m.name for m in config.models), config.workers, extra=start_fields(config))  # fmt: skip
    try:
        lock = InstanceLock.acquire(config.state_dir)
    except InstanceLocked as exc:
        log.error("cannot start: %s", exc, extra=start_failed(exc))
        return 2
    with lock:
        return await serve_locked(config, compose)


async def serve_locked(config: Config, compose: Callable[[Config], Parts]) -> int:
    try:
        parts = compose(config)
        sock = bind(config.host, config.port)
    except StartupError as exc:
        log.error("cannot start: %s", exc, extra=start_failed(exc))
        return 2
    parts.app[PARTS] = parts
    parts.app.cleanup_ctx.extend([state_context, workers_context, supervision_context, guard_context,
                                  preload_context, background_context, watchdog_context])  # fmt: skip
    install_signals(parts)
    runner = make_runner(parts)
    code = 1  # what an unexpected exception out of run() makes of it
    try:
        code = await run(parts, runner, sock)
        return code
    finally:
        parts.begin_shutdown()
        await runner.cleanup()  # also after a failed setup: leaves the contexts entered so far
        sock.close()
        log.info("stopped", extra={"event": "appliance_stopped", "exit_code": code})


def make_runner(parts: Parts) -> web.AppRunner:
    """The app's runner, of the class and with the access log ``compose`` chose (``Parts.runner_factory``)."""
    # handler_cancellation: a client that disconnects cancels its handler (aiohttp >= 3.9 leaves
    # handlers running by default): a rerank's parts are withdrawn from the workers at once; an
    # embedding computation runs on for whoever joined it and fills the cache (gateway/coalesce.py)
    wait = handler_wait(parts.config.shutdown_grace)
    return parts.runner_factory(parts.app, shutdown_timeout=wait, handler_cancellation=True)


def handler_wait(grace: float) -> float:
    """aiohttp's ``shutdown_timeout`` that keeps its stage within ``grace``. Its per-connection
    shutdown waits ``shutdown_timeout`` for a running handler, then fails the request's body read
    and waits as long again before it cancels the handler: a handler stuck on a worker that never
    answers would take twice the timeout. Half each, so a handler gets the whole grace in total
    and the stages after it (``Parts.remaining``) find the budget spent once, not twice."""
    return grace / 2


async def run(parts: Parts, runner: web.AppRunner, sock: socket.socket) -> int:
    sdnotify.notify(f"STATUS=starting {len(parts.supervisor.handles)} workers")
    try:
        await runner.setup()
    except StartAborted:
        return 0
    except (BootError, StartupError, OSError) as exc:  # OSError: e.g. no room in /dev/shm for the rings
        log.error("cannot start: %s", exc, extra=start_failed(exc))
        return 1
    # What start-up allocated (modules, config, the preloaded cache) is never garbage: moved out
    # of the collector's reach, a full collection walks only what requests allocate.
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    # backlog: aiohttp listens again on the socket with its own backlog (128 by default)
    await web.SockSite(runner, sock, backlog=LISTEN_BACKLOG).start()
    config = parts.config
    log.info("appliance serving %s on http://%s:%d", ", ".join(m.name for m in config.models), config.host,
             config.port, extra=ready_fields(parts))  # fmt: skip
    sdnotify.notify(f"READY=1\nSTATUS={serving_status(parts)}")
    await parts.stop.wait()
    log.info("shutting down: up to %.0fs to drain", config.shutdown_grace,
             extra={"event": "appliance_draining", "grace_s": config.shutdown_grace,
                    "cause": "failure" if parts.failure else "signal"})  # fmt: skip
    sdnotify.notify(f"STOPPING=1\nSTATUS={'stopping: ' + parts.failure if parts.failure else 'draining'}")
    parts.begin_shutdown()
    parts.router.draining = True  # new work gets 503 draining while in-flight work finishes
    if parts.failure:
        log.error("stopping: %s", parts.failure, extra={"event": "appliance_failure", "reason": parts.failure})
        return 1
    return 0


# ---- the lifecycle's events (appliance/logs.py) ----------------------------------------------------
def start_fields(config: Config) -> dict[str, Any]:
    """The start event: what an operator needs to know which appliance this log is of."""
    return {"event": "appliance_start", "host": config.host, "port": config.port,
            "models": [m.name for m in config.models], "workers": config.workers,
            "dtype": {m.name: m.dtype for m in config.models}, "log_format": config.log_format,
            "access_log": config.access_log, "access_log_sample": config.access_log_sample}  # fmt: skip


def start_failed(error: BaseException) -> dict[str, Any]:
    return {"event": "appliance_start_failed", "reason": str(error)}


def ready_fields(parts: Parts) -> dict[str, Any]:
    config = parts.config
    return {"event": "appliance_ready", "host": config.host, "port": config.port,
            "models": [m.name for m in config.models], "workers": len(parts.supervisor.handles)}  # fmt: skip


def serving_status(parts: Parts) -> str:
    """The one line ``systemctl status`` shows while serving."""
    config, workers = parts.config, len(parts.supervisor.handles)
    return f"serving {len(config.models)} models on {config.host}:{config.port}, {workers} workers"


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound now (before any model loads); StartupError if it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT only, not a live listener
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


# ---- the cleanup contexts, in start order -------------------------------------------------------
async def state_context(app: web.Application) -> AsyncIterator[None]:
    """Durable state (the job store) first: a corrupt or unwritable state_dir fails in
    milliseconds, before any model loads."""
    background = app[PARTS].background
    await background.open()
    try:
        yield
    finally:
        await background.close()


async def workers_context(app: web.Application) -> AsyncIterator[None]:
    """Channels and workers: up when every worker is ready; on the way out, in-flight work is
    drained, the workers stopped and every segment unlinked."""
    parts = app[PARTS]
    removed = sweep_stale_segments()
    if removed:
        log.warning("removed %d shared-memory segment(s) left by a crashed run: %s", len(removed), removed,
                    extra={"event": "stale_segments_removed", "segments": removed})  # fmt: skip
    try:
        parts.link.open()
        await start_workers(parts)
        yield
        await parts.router.wait_idle(parts.remaining())
    finally:
        await parts.supervisor.stop(parts.remaining())
        parts.link.close()


async def start_workers(parts: Parts) -> None:
    """Every worker ready, or BootError; StartAborted when a stop signal comes first."""
    starting = asyncio.create_task(parts.supervisor.start())
    stopped = asyncio.create_task(parts.stop.wait())
    try:
        await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
    if not starting.done() or starting.cancelled():
        raise StartAborted("stopped while the workers were starting")
    starting.result()


async def supervision_context(app: web.Application) -> AsyncIterator[None]:
    """The supervisor's cycle; if it ever dies, the appliance stops (and exits non-zero) rather
    than serve on without respawns or heartbeat checks."""
    parts = app[PARTS]
    task = asyncio.create_task(parts.supervisor.run(), name="supervisor")
    task.add_done_callback(lambda done: on_supervision_end(parts, done))
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def on_supervision_end(parts: Parts, task: asyncio.Task[None]) -> None:
    """Record why supervision ended and stop: ``/ready`` turns 503, the watchdog pings stop and
    the process exits 1. A lost slot (``SlotLost``) was logged by the supervisor with its cause;
    anything else is unexpected and logged here with its traceback."""
    if task.cancelled() or parts.stop.is_set():
        return
    error = task.exception()
    if isinstance(error, SlotLost):
        parts.failure = f"a worker slot is lost: {error}"
    else:
        parts.failure = f"the supervisor stopped unexpectedly: {error!r}"
        log.error("%s", parts.failure, exc_info=error, extra={"event": "supervision_failed"})
    parts.stop.set()


async def guard_context(app: web.Application) -> AsyncIterator[None]:
    guard = app[PARTS].guard
    guard.start()  # samples on its own timer; requests only read `guard.low`
    yield
    await guard.stop()


async def preload_context(app: web.Application) -> AsyncIterator[None]:
    """Before the port opens: ready means preloaded. A preload error fails the start."""
    parts = app[PARTS]
    await parts.preload(parts.stop.is_set)
    yield


async def background_context(app: web.Application) -> AsyncIterator[None]:
    """Bulk work runs once the workers serve and stops before they do (its chunks in flight are
    handed out again at the next start)."""
    background = app[PARTS].background
    background.start()
    yield
    await background.stop()


async def watchdog_context(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(ping_watchdog(app[PARTS]), name="watchdog")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def ping_watchdog(parts: Parts) -> None:
    """``WATCHDOG=1`` every half ``WATCHDOG_USEC``, only while nothing has failed: a dead
    supervision task stops the pings, so systemd restarts a service that can no longer heal."""
    interval = sdnotify.watchdog_interval()
    while interval and not parts.failure:
        sdnotify.notify("WATCHDOG=1")
        await asyncio.sleep(interval)


# ---- signals ---------------------------------------------------------------------------------------
def install_signals(parts: Parts) -> None:
    """First SIGTERM/SIGINT: graceful drain. Second: kill the workers, unlink, leave at once."""
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)  # record; the serve coroutine acts on the event
        if len(received) == 1:
            parts.stop.set()
            return
        log.warning("second signal: stopping now", extra={"event": "appliance_forced_stop", "signal": signum})
        parts.supervisor.kill_all()
        parts.link.close()
        os._exit(1)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
