"""Start a baseline server on a free port, wait for its ``/health``, stop its whole process group.

Sizing, from the cores this process may use (``cores``): the one-process designs give torch every
core (one model, the whole machine); ``threadpool`` runs that many executor threads; ``reuseport``
runs one copy per core with one thread each, the layout the appliance itself picks on a small CPU
machine. Like the appliance a bench starts, a baseline sees no GPU unless ``env`` names one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, Mapping

from bench.launcher import free_port

ROOT = Path(__file__).resolve().parents[2]
READY_S = 180.0
STOP_S = 15.0
POLL_S = 0.2


class BaselineError(RuntimeError):
    """A baseline did not come up; the message holds the tail of its log."""


def command(design: str, port: int, model: str, model_path: str, dtype: str, cores: int) -> tuple[list[str], int]:
    """The server's command line and its torch threads per process."""
    threads = 1 if design == "reuseport" else cores
    argv = [sys.executable, "-m", "bench.baselines.server", design, "--port", str(port), "--model", model,
            "--model-path", model_path, "--dtype", dtype, "--threads", str(threads), "--pool", str(cores),
            "--processes", str(cores)]  # fmt: skip
    return argv, threads


@contextlib.contextmanager
def running(design: str, *, model: str, model_path: str, dtype: str = "auto",
            env: Mapping[str, str] | None = None) -> Iterator[str]:  # fmt: skip
    """The baseline's URL while the ``with`` body runs; stopped (SIGTERM, then SIGKILL) after."""
    port = free_port()
    argv, threads = command(design, port, model, model_path, dtype, len(os.sched_getaffinity(0)))
    child_env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_WAIT_POLICY": "PASSIVE",
                 **{var: str(threads) for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}, **(env or {})}  # fmt: skip
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(argv, cwd=ROOT, env=child_env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, process, log)
            yield url
        finally:
            stop(process)


def wait_ready(url: str, process: subprocess.Popen[bytes], log: object) -> None:
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BaselineError(f"the baseline exited with {process.returncode}:\n{tail(log)}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(POLL_S)
    raise BaselineError(f"the baseline was not ready within {READY_S:.0f} s:\n{tail(log)}")


def tail(log: object, chars: int = 3000) -> str:
    log.seek(0)  # type: ignore[attr-defined]
    return log.read().decode(errors="replace")[-chars:]  # type: ignore[attr-defined]


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the group (the server and, for reuseport, its copies); SIGKILL past the bound."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(STOP_S)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # copies that outlived their parent, too
    process.wait(STOP_S)
