"""The appliance under systemd's eyes: the notify protocol on a real ``NOTIFY_SOCKET``, and the
unit file checked by ``systemd-analyze``.

The real appliance (tiny static model) is started with ``NOTIFY_SOCKET`` naming a datagram socket
this test binds, and ``WATCHDOG_USEC`` set (``WATCHDOG_PID`` left unset: the appliance is not the
pid systemd would have started). Every datagram is recorded with its arrival time.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

import pytest

from appliance.install import unit_text
from system_tools import debian_tool
from harness import Appliance, assert_clean_exit

MODEL = "tiny"
WATCHDOG_USEC = 1_000_000  # a ping every 0.5 s
PING_S = WATCHDOG_USEC / 2e6


class NotifySocket:
    """systemd's side of the protocol: a bound AF_UNIX datagram socket; each message recorded as
    (monotonic arrival time, its ``KEY=value`` lines), and ``on_message`` called from the thread."""

    def __init__(self, path: Path, on_message: Callable[[list[str]], None] = lambda lines: None) -> None:
        self.path = path
        self.on_message = on_message
        self.messages: list[tuple[float, list[str]]] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self.receive, daemon=True)
        self.thread.start()

    def receive(self) -> None:
        while not self.closed.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            lines = data.decode().splitlines()
            self.messages.append((time.monotonic(), lines))
            self.on_message(lines)

    def times(self, line: str) -> list[float]:
        return [at for at, lines in list(self.messages) if line in lines]

    def lines(self) -> list[str]:
        return [line for _, lines in list(self.messages) for line in lines]

    def wait_for(self, line: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.times(line):
                return self.times(line)[0]
            time.sleep(0.02)
        raise AssertionError(f"no {line} within {timeout:.0f}s; received {self.lines()}")

    def close(self) -> None:
        self.closed.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def notify_socket() -> Iterator[Callable[..., NotifySocket]]:
    """A NotifySocket under a short temporary directory (AF_UNIX paths stop at 107 bytes)."""
    made: list[NotifySocket] = []
    directory = Path(tempfile.mkdtemp(prefix="notify-"))

    def make(on_message: Callable[[list[str]], None] = lambda lines: None) -> NotifySocket:
        made.append(NotifySocket(directory / f"sock{len(made)}", on_message))
        return made[-1]

    yield make
    for listener in made:
        listener.close()
    shutil.rmtree(directory, ignore_errors=True)


def ready_status(url: str) -> int | None:
    """GET /ready's status; None when nothing answered (port not yet served) within a second."""
    try:
        with urllib.request.urlopen(url + "/ready", timeout=1.0) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return None


def notify_env(listener: NotifySocket) -> dict[str, str]:
    return {"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": str(WATCHDOG_USEC), "APPLIANCE_CACHE_BYTES": "0"}


def test_ready_status_watchdog_and_stopping(launch: Callable[..., Appliance], tiny_static: Path,
                                            notify_socket: Callable[..., NotifySocket]) -> None:  # fmt: skip
    """READY=1 comes only once /ready answers 200 (checked the moment it arrives, and by every
    poll that started after it); STATUS says starting, then what is served; WATCHDOG=1 every
    half WATCHDOG_USEC while serving; STOPPING=1 with STATUS=draining on SIGTERM."""
    url: list[str] = []
    at_ready: list[int | None] = []  # /ready's status fetched from the listener as READY=1 arrives
    listener = notify_socket(lambda lines: at_ready.append(ready_status(url[0])) if "READY=1" in lines else None)
    appliance = launch([{"name": MODEL, "path": str(tiny_static), "kind": "static", "main": True}], workers=2,
                       env=notify_env(listener), wait_ready=False)  # fmt: skip
    url.append(appliance.url)
    polls: list[tuple[float, int | None]] = []  # (start time, status) of each poll of /ready
    deadline = time.monotonic() + 120
    while not (listener.times("READY=1") and polls and polls[-1][0] > listener.times("READY=1")[0]):
        assert time.monotonic() < deadline and appliance.process.poll() is None, appliance.log_tail()
        started = time.monotonic()
        polls.append((started, ready_status(appliance.url)))
        time.sleep(0.02)
    ready_at = listener.times("READY=1")[0]
    assert at_ready == [200]
    assert all(status == 200 for started, status in polls if started > ready_at), polls
    assert any(status != 200 for _, status in polls), "the appliance was ready before the first poll"

    time.sleep(6 * PING_S)
    pings = [at for at in listener.times("WATCHDOG=1") if at > ready_at]
    assert len(pings) >= 4, listener.lines()
    assert max(b - a for a, b in zip(pings, pings[1:])) < 2 * PING_S, pings

    statuses = [line for line in listener.lines() if line.startswith("STATUS=")]
    port = appliance.url.rsplit(":", 1)[1]
    assert statuses == ["STATUS=starting 2 workers", f"STATUS=serving 1 models on 127.0.0.1:{port}, 2 workers"]

    assert_clean_exit(appliance, appliance.stop(signal.SIGTERM))
    listener.wait_for("STOPPING=1", 5)
    assert any(lines == ["STOPPING=1", "STATUS=draining"] for _, lines in listener.messages), listener.lines()


def test_the_pings_stop_when_the_supervisor_is_broken(launch: Callable[..., Appliance], tiny_static: Path,
                                                      notify_socket: Callable[..., NotifySocket],
                                                      tmp_path: Path) -> None:  # fmt: skip
    """A worker whose model was deleted after start is SIGKILLed: its respawn fails to load the
    model (a fatal exit), the supervisor gives the slot up, and systemd must hear no more pings."""
    model = shutil.copytree(tiny_static, tmp_path / "model")
    listener = notify_socket()
    appliance = launch([{"name": MODEL, "path": str(model), "kind": "static", "main": True}], workers=1, env=notify_env(listener))
    listener.wait_for("READY=1", 10)
    shutil.rmtree(model)
    (worker,) = appliance.worker_pids()


    os.kill(worker, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while "not respawning" not in appliance.log():
        assert time.monotonic() < deadline, appliance.log_tail()
        time.sleep(0.1)
    broken_at = time.monotonic()
    time.sleep(6 * PING_S)
    late = [at for at in listener.times("WATCHDOG=1") if at > broken_at + PING_S]
    assert not late, f"{len(late)} pings after the supervisor broke"


# ---- the unit file --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def systemd_analyze() -> str:
    """Debian's ``systemd-analyze`` (package systemd), installed when missing and the machine
    allows; the tests fail rather than skip when it cannot be had."""
    return debian_tool("systemd-analyze", "systemd")


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    """The unit as install-systemd writes it: ExecStart on this venv's python, which exists."""
    path = tmp_path / "appliance.service"
    path.write_text(unit_text(Path(sys.prefix)))
    return path


def test_systemd_analyze_verify_accepts_the_unit(systemd_analyze: str, unit: Path) -> None:
    done = subprocess.run([systemd_analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60,
                          cwd=unit.parent)  # fmt: skip
    complaints = [line for line in (done.stdout + done.stderr).splitlines() if unit.name in line]
    assert done.returncode == 0 and not complaints, done.stdout + done.stderr


def test_the_unit_is_sandboxed(systemd_analyze: str, unit: Path) -> None:
    """``systemd-analyze security --offline``'s exposure (0 safest, 10 unsafe) stays low."""
    done = subprocess.run([systemd_analyze, "security", "--offline=true", "--no-pager", str(unit)],
                          capture_output=True, text=True, timeout=60, cwd=unit.parent)  # fmt: skip
    if "--offline" in done.stderr and "unrecognized" in done.stderr:
        pytest.skip("this systemd-analyze has no --offline (systemd < 250)")
    score = re.search(r"Overall exposure level for appliance\.service: (\d+\.\d+)", done.stdout)
    assert score, done.stdout + done.stderr
    assert float(score.group(1)) <= 2.0, done.stdout
