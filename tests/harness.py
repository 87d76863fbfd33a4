"""Start the real appliance in a subprocess for integration tests, and check it leaves nothing behind."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

READY_TIMEOUT_S = 120.0


@dataclass
class Reply:
    """One HTTP answer as the in-thread test servers' clients see it."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Appliance:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    children: list[int] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(f"appliance did not stop within {timeout}s\n{self.log()[-4000:]}") from None

    def worker_pids(self) -> list[int]:
        try:
            return [c.pid for c in psutil.Process(self.process.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []


def start_appliance(tmp_path: Path, models: list[dict[str, Any]], *, workers: int = 2,
                    env: dict[str, str] | None = None, wait_ready: bool = True) -> Appliance:  # fmt: skip
    port = free_port()
    full_env = {
        **os.environ,
        "APPLIANCE_PORT": str(port),
        "APPLIANCE_WORKERS": str(workers),
        "APPLIANCE_STATE_DIR": str(tmp_path / "state"),
        "APPLIANCE_MODELS": json.dumps(models),
        "APPLIANCE_READY_TIMEOUT": "90",
        "APPLIANCE_SHUTDOWN_GRACE": "20",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        **(env or {}),
    }
    log_path = tmp_path / f"appliance-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "appliance.cli", "serve"], env=full_env,
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
    appliance = Appliance(process, f"http://127.0.0.1:{port}", log_path)
    if wait_ready:
        wait_until_ready(appliance)
        appliance.children = appliance.worker_pids()
    return appliance


def wait_until_ready(appliance: Appliance, timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if appliance.process.poll() is not None:
            raise AssertionError(f"appliance exited with {appliance.process.returncode}\n{appliance.log()[-4000:]}")
        try:
            with urllib.request.urlopen(appliance.url + "/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    appliance.stop(signal.SIGKILL)
    raise AssertionError(f"appliance not ready within {timeout}s\n{appliance.log()[-4000:]}")


def segments_of(pid: int) -> list[str]:
    """Shared-memory segments named for the appliance process ``pid``."""
    return [name for name in os.listdir("/dev/shm") if f"-{pid}-" in name]


def assert_clean_exit(appliance: Appliance, code: int) -> None:
    """Exit 0, no segment left in /dev/shm, no orphan worker."""
    assert code == 0, f"exit code {code}\n{appliance.log()[-4000:]}"
    assert segments_of(appliance.process.pid) == [], "shared-memory segment left behind"
    deadline = time.monotonic() + 5
    alive = [p for p in appliance.children if psutil.pid_exists(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"orphan worker processes: {alive}"


def post(url: str, body: Any, timeout: float = 30.0, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read() or b"null")


def get(url: str, timeout: float = 10.0) -> tuple[int, dict[str, str], Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read() or b"null")
