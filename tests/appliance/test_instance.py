"""appliance/instance.py: one holder per state_dir, named to the one refused; gone with its holder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.instance import LOCK_FILE, InstanceLock, InstanceLocked

HOLD = """
import sys
from appliance.instance import InstanceLock
lock = InstanceLock.acquire(sys.argv[1])
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_second_holder_is_refused_naming_the_file_and_the_holders_pid(tmp_path: Path) -> None:
    state = tmp_path / "state"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(state)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(InstanceLocked, match=f"pid {holder.pid}.* {state / LOCK_FILE}"):
            InstanceLock.acquire(str(state))
        holder.send_signal(signal.SIGKILL)  # a crashed holder leaves nothing to clean up
        holder.wait(10)
        with InstanceLock.acquire(str(state)) as lock:
            assert (state / LOCK_FILE).read_text() == f"{os.getpid()}\n"
            assert lock.path == str(state / LOCK_FILE)
    finally:
        holder.kill()
        holder.wait(10)


def test_a_state_dir_that_cannot_hold_the_lock_is_named(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_text("a file where the state directory should be")
    with pytest.raises(InstanceLocked, match=f"cannot open the instance lock {state / LOCK_FILE}"):
        InstanceLock.acquire(str(state))
