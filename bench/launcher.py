"""Start the real appliance in a subprocess, wait until it serves, stop it, check what it left.

One launcher for the tests (``tests/harness.py``) and the benchmarks (``bench/target.py``). It
knows the appliance only from the outside, as an operator does: the command line
(``python -m appliance.cli serve [--config FILE]``), ``APPLIANCE_*`` environment variables,
``GET /ready`` and ``GET /stats``; it imports nothing of the appliance itself.

- ``start``: a free port, a work directory (the ``state/`` dir and the log), GPUs hidden unless
  the caller's ``env`` names ``CUDA_VISIBLE_DEVICES``; then waits until ``/ready`` answers 200
  and ``/stats`` shows every worker up with its pid (``/ready`` means one holder per model: a
  worker still importing torch would take a core from whatever is measured or tested next).
- ``Appliance.stop``: one signal (SIGTERM: drain, then exit), a bounded wait, then SIGKILL for
  the appliance and every worker it was seen to run. One signal only: a second one tells the
  appliance to stop at once, without draining.
- ``Appliance.leftovers``: ``/dev/shm/appl-<pid>-*`` segments named for the appliance or one of
  its workers (the appliance names a segment for the process that created it), and any of those
  processes still alive.
- ``Appliance.close``, and ``running`` on the way out of its ``with``, failure or not: stop, note
  the leftovers (``Appliance.leftover``), then remove them (SIGKILL, unlink).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import psutil

READY_S = 300.0  # model loads on a busy 2-core box take tens of seconds per worker
STOP_S = 60.0  # SIGTERM -> exit: the drain, then the workers' own exit
KILL_S = 10.0  # SIGKILL -> reaped
ORPHAN_S = 5.0  # a worker may take a moment longer than the appliance to exit
POLL_S = 0.1
SHM_DIR = Path("/dev/shm")
SEGMENT_PREFIX = "appl-"  # appl-<creator pid>-<random hex>
GPUS = "CUDA_VISIBLE_DEVICES"
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # nothing launched here reaches a model hub


class LaunchError(RuntimeError):
    """The appliance exited, or was not serving in time; the message ends with its log's tail."""


@dataclass
class Leftovers:
    segments: list[str] = field(default_factory=list)  # names in /dev/shm
    pids: list[int] = field(default_factory=list)  # the appliance or its workers, still alive

    def __bool__(self) -> bool:
        return bool(self.segments or self.pids)


@dataclass
class Appliance:
    """One appliance process started by ``start``, and every worker process it was seen to run."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    headers: dict[str, str] = field(default_factory=dict)  # for /stats when it wants an API key
    # every worker seen, respawned ones included; a psutil.Process is its pid AND start time, so a
    # reused pid is never taken for one of them (nor killed)
    workers: set[psutil.Process] = field(default_factory=set)
    forced: bool = False  # it outlived its stop bound and was SIGKILLed
    leftover: Leftovers | None = None  # what ``close`` found (and then removed)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log()[-chars:]

    # ---- up ------------------------------------------------------------------------------------
    def wait_ready(self, timeout: float = READY_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LaunchError(f"appliance exited with {self.process.returncode} before serving\n{self.log_tail()}")
            if self.all_up():
                self.worker_pids()
                return
            time.sleep(POLL_S)
        raise LaunchError(f"appliance not serving with every worker up within {timeout:.0f}s\n{self.log_tail()}")

    def all_up(self) -> bool:
        if fetch(self.url + "/ready", self.headers) is None:
            return False
        stats = fetch(self.url + "/stats", self.headers)
        workers = json.loads(stats).get("workers") if stats else None
        return bool(workers) and all(w["up"] and w["pid"] for w in workers)

    def worker_pids(self) -> list[int]:
        """The appliance's live child processes now; each is remembered for the leftover check."""
        try:
            children = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        self.workers.update(children)
        return sorted(child.pid for child in children)

    # ---- down ----------------------------------------------------------------------------------
    def send(self, sig: int = signal.SIGTERM) -> None:
        self.worker_pids()  # before the signal: a worker spawned during boot must not go unseen
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def wait_exit(self, timeout: float = STOP_S) -> int:
        """The exit code, waiting at most ``timeout``; past it, SIGKILL everything (``forced``)."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.forced = True
            self.kill()
            return self.process.wait(KILL_S)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_S) -> int:
        self.send(sig)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        """The appliance first, so it cannot spawn again, then every worker it ran."""
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        for worker in self.workers:
            with contextlib.suppress(psutil.Error):  # gone already, or its pid reused: psutil refuses
                worker.kill()

    def leftovers(self, grace: float = ORPHAN_S) -> Leftovers:
        deadline = time.monotonic() + grace
        while True:
            found = Leftovers(self.segments(), self.alive())
            if not found.pids or time.monotonic() >= deadline:
                return found
            time.sleep(POLL_S)

    def segments(self) -> list[str]:
        pids = {self.pid} | {worker.pid for worker in self.workers}
        return [name for pid in sorted(pids) for name in segments_of(pid)]

    def alive(self) -> list[int]:
        pids = [self.pid] if self.process.poll() is None else []
        return pids + sorted(worker.pid for worker in self.workers if still_running(worker))

    def close(self, timeout: float = STOP_S) -> Leftovers:
        """Stop it if it runs, note what it left, remove that. Safe to call again."""
        if self.leftover is None:
            self.stop(timeout=timeout)
            self.leftover = self.leftovers()
            self.kill()
            for name in self.leftover.segments:
                (SHM_DIR / name).unlink(missing_ok=True)
        return self.leftover


def still_running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def segments_of(pid: int) -> list[str]:
    """Shared-memory segments created by process ``pid``."""
    return sorted(name for name in os.listdir(SHM_DIR) if name.startswith(f"{SEGMENT_PREFIX}{pid}-"))


def fetch(url: str, headers: Mapping[str, str]) -> bytes | None:
    """The body of a 200 answer; None for any other answer or none at all."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=dict(headers)), timeout=2) as response:
            return bytes(response.read()) if response.status == 200 else None
    except (OSError, http.client.HTTPException):  # refused, reset, timed out, an error status, cut short
        return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(port: int, workdir: Path, models: list[dict[str, Any]] | None, workers: int | str,
              env: Mapping[str, str] | None) -> dict[str, str]:  # fmt: skip
    """This environment, offline, GPUs hidden, this port and work dir; the caller's ``env`` over
    all of that (a benchmark on a GPU host names its ``CUDA_VISIBLE_DEVICES`` there)."""
    settings = {**os.environ, **OFFLINE, GPUS: "", "APPLIANCE_PORT": str(port), "APPLIANCE_WORKERS": str(workers),
                "APPLIANCE_STATE_DIR": str(workdir / "state")}  # fmt: skip
    if models is not None:
        settings["APPLIANCE_MODELS"] = json.dumps(models)
    return {**settings, **(env or {})}


def start(models: list[dict[str, Any]] | None, *, workdir: Path, workers: int | str = 2,
          env: Mapping[str, str] | None = None, config: Path | None = None, headers: Mapping[str, str] | None = None,
          wait: bool = True, ready_timeout: float = READY_S, cwd: Path | None = None) -> Appliance:  # fmt: skip
    """``python -m appliance.cli serve`` on a free port, logging to ``workdir``; ``cwd``: another
    checkout of the appliance to run instead of this one (``python -m`` imports from it first). ``models`` goes
    to ``APPLIANCE_MODELS`` (None: the config's or the defaults). With ``wait``, returns once it
    serves with every worker up; if it does not, it is closed before ``LaunchError`` is raised.
    An ``APPLIANCE_PORT`` in ``env`` is used as given (a test of a port in use needs that)."""
    port = int((env or {}).get("APPLIANCE_PORT") or free_port())
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"appliance-{port}.log"
    command = [sys.executable, "-m", "appliance.cli", "serve", *(["--config", str(config)] if config else [])]
    environment = child_env(port, workdir, models, workers, env)
    with open(log_path, "wb") as log:
        # its own session: a Ctrl-C at the terminal reaches only this process, whose ``finally``
        # stops the appliance with ONE signal (a second would mean "stop now, no drain")
        process = subprocess.Popen(command, env=environment, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd)  # fmt: skip
    appliance = Appliance(process, f"http://127.0.0.1:{port}", log_path, dict(headers or {}))
    if wait:
        try:
            appliance.wait_ready(ready_timeout)
        except BaseException:
            appliance.close()
            raise
    return appliance


@contextlib.contextmanager
def running(models: list[dict[str, Any]] | None, *, stop_timeout: float = STOP_S,
            **options: Any) -> Iterator[Appliance]:  # fmt: skip
    """``start`` (same options); on the way out, failure or not, ``close``."""
    appliance = start(models, **options)
    try:
        yield appliance
    finally:
        appliance.close(stop_timeout)
