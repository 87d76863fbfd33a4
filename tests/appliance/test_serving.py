"""``appliance/serving.py``: a start that fails at any stage leaves no worker and no segment behind,
and exits non-zero with one line that says why; a stop signal during start-up stops cleanly.

Real appliance processes with a tiny static model; a worker left behind would be re-parented
to init, so workers are found by the parent pid their spec names, not as children.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

import psutil
import pytest

from harness import Appliance, segments_of, serving, start_appliance

pytestmark = pytest.mark.slow

STATIC = "tiny-static"
EXIT_WAIT_S = 60.0


def static_model(path: Path) -> list[dict[str, object]]:
    return [{"name": STATIC, "path": str(path), "kind": "static", "main": True}]


def workers_of(pid: int) -> list[int]:
    """Live worker processes spawned by appliance ``pid`` (their spec names it as parent)."""
    marker = f'"parent_pid":{pid}'
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if process.info["status"] != psutil.STATUS_ZOMBIE and any(marker in arg for arg in cmdline):
            found.append(process.pid)
    return found


def wait_exit(appliance: Appliance) -> int:
    try:
        return appliance.process.wait(EXIT_WAIT_S)
    except Exception:
        appliance.stop(signal.SIGKILL)
        raise


def assert_nothing_left(appliance: Appliance) -> None:
    pid = appliance.process.pid
    deadline = time.monotonic() + 5
    while workers_of(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert workers_of(pid) == [], f"workers left running\n{appliance.log()[-3000:]}"
    assert segments_of(pid) == [], f"segments left in /dev/shm\n{appliance.log()[-3000:]}"


def error_lines(appliance: Appliance) -> list[str]:
    return [line for line in appliance.log().splitlines() if "cannot start" in line]


def test_a_port_in_use_fails_at_once_and_leaves_nothing(tmp_path: Path, tiny_static: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        appliance = start_appliance(tmp_path, static_model(tiny_static), workers=1, wait_ready=False,
                                    env={"APPLIANCE_PORT": str(port)})  # fmt: skip
        try:
            started = time.monotonic()
            code = wait_exit(appliance)
            assert code != 0 and time.monotonic() - started < 20, appliance.log()[-3000:]
        finally:
            appliance.stop(signal.SIGKILL)
        assert_nothing_left(appliance)
    (line,) = error_lines(appliance)
    assert f"cannot listen on 127.0.0.1:{port}" in line
    assert "spawned" not in appliance.log(), "no worker is started for a port that cannot be had"


def test_a_preload_naming_an_unknown_model_stops_the_started_workers(tmp_path: Path, tiny_static: Path) -> None:
    preload = tmp_path / "preload.json"
    preload.write_text(json.dumps([{"text": "fine", "frequency": 2}, {"text": "x", "model": "nope", "frequency": 1}]))
    appliance = start_appliance(tmp_path, static_model(tiny_static), workers=2, wait_ready=False,
                                env={"APPLIANCE_PRELOAD_FILE": str(preload)})  # fmt: skip
    try:
        code = wait_exit(appliance)
    finally:
        appliance.stop(signal.SIGKILL)
    assert code == 1, appliance.log()[-3000:]
    assert appliance.log().count("ready in") == 2, "the failure is meant to come after the workers are up"
    assert_nothing_left(appliance)
    (line,) = error_lines(appliance)
    assert "names model 'nope'" in line and STATIC in line


def test_sigterm_while_workers_load_stops_cleanly(tmp_path: Path, tiny_static: Path) -> None:
    appliance = start_appliance(tmp_path, static_model(tiny_static), workers=2, wait_ready=False)
    try:
        deadline = time.monotonic() + 30
        while "spawned" not in appliance.log() and time.monotonic() < deadline:
            time.sleep(0.01)
        appliance.process.send_signal(signal.SIGTERM)
        code = wait_exit(appliance)
    finally:
        appliance.stop(signal.SIGKILL)
    assert code == 0, appliance.log()[-3000:]
    assert_nothing_left(appliance)


@pytest.mark.parametrize("damage", ["corrupt", "unwritable"])
def test_a_bad_state_dir_refuses_the_start_naming_the_path(tmp_path: Path, tiny_static: Path, damage: str) -> None:
    state = tmp_path / "state"
    if damage == "corrupt":
        state.mkdir()
        (state / "jobs.sqlite3").write_bytes(bytes(range(256)) * 64)  # not a database
    else:
        state.write_text("a file where the state directory should be")  # unwritable even for root
    appliance = start_appliance(tmp_path, static_model(tiny_static), workers=1, wait_ready=False,
                                env={"APPLIANCE_STATE_DIR": str(state)})  # fmt: skip
    try:
        started = time.monotonic()
        code = wait_exit(appliance)
    finally:
        appliance.stop(signal.SIGKILL)
    assert code != 0 and time.monotonic() - started < 20, appliance.log()[-3000:]
    (line,) = error_lines(appliance)
    assert str(state) in line
    assert "spawned" not in appliance.log(), "the state is checked before any worker starts"
    assert_nothing_left(appliance)


def test_a_second_appliance_on_the_same_state_dir_refuses_at_once_naming_the_lock(tmp_path: Path,
                                                                                   tiny_static: Path) -> None:  # fmt: skip
    with serving(tmp_path, static_model(tiny_static), workers=1) as first:
        segments = segments_of(first.process.pid)
        assert segments, "the first appliance's channel is in /dev/shm"
        second = start_appliance(tmp_path, static_model(tiny_static), workers=1, wait_ready=False)
        try:
            started = time.monotonic()
            code = wait_exit(second)
        finally:
            second.stop(signal.SIGKILL)
        assert code == 2 and time.monotonic() - started < 20, second.log()[-3000:]
        (line,) = error_lines(second)
        assert str(tmp_path / "state" / "appliance.lock") in line and f"pid {first.process.pid}" in line
        assert "spawned" not in second.log() and "removed" not in second.log()
        assert segments_of(first.process.pid) == segments  # nothing swept from under the first
        assert_nothing_left(second)
