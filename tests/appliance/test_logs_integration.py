"""The real appliance with ``log_format = "json"``: every line it and its workers write is one JSON
object, and the lifecycle, the supervisor and the jobs each say what happened as a named event
with its fields (``appliance/logs.py``; the events are listed in docs/architecture.md).

One appliance, one tiny worker; the launcher's log file holds its stdout and stderr, workers'
included (they inherit the gateway's)."""

from __future__ import annotations

import datetime
import json
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from harness import Appliance, assert_clean_exit, get, post

pytestmark = pytest.mark.slow

MODEL = "tiny"
WAIT_S = 90.0  # a respawn on a loaded 2-core box takes tens of seconds
ENVELOPE = ("time", "level", "logger", "process", "event", "message")


def entries(appliance: Appliance) -> list[dict[str, Any]]:
    """Every line of the log as JSON; a line that is not fails the test naming it."""
    parsed = []
    for number, line in enumerate(appliance.log().splitlines(), 1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"log line {number} is not JSON: {line!r}")
        assert isinstance(entry, dict) and list(entry)[: len(ENVELOPE)] == list(ENVELOPE), line
        parsed.append(entry)
    return parsed


def events(appliance: Appliance, name: str, **match: Any) -> list[dict[str, Any]]:
    return [e for e in entries(appliance) if e["event"] == name and all(e.get(k) == v for k, v in match.items())]


def wait_for_event(appliance: Appliance, name: str, **match: Any) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        found = events(appliance, name, **match)
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no {name} event matching {match} within {WAIT_S:.0f}s\n{appliance.log_tail()}")


def wait_until(condition: Callable[[], bool], what: str, appliance: Appliance) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {WAIT_S:.0f}s\n{appliance.log_tail()}"
        time.sleep(0.1)


def worker_pid(appliance: Appliance) -> int | None:
    status, _, body = get(appliance.url + "/stats")
    up = [w["pid"] for w in body["workers"] if w["up"] and w["pid"]] if status == 200 else []
    return up[0] if up else None


@pytest.fixture
def appliance(launch: Callable[..., Appliance], tiny_transformer: Path) -> Appliance:
    models = [{"name": MODEL, "path": str(tiny_transformer), "main": True}]
    return launch(models, workers=1, env={"APPLIANCE_LOG_FORMAT": "json", "APPLIANCE_JOB_CHUNK_SIZE": "4"})


def test_a_json_appliance_logs_its_life_as_json_events(appliance: Appliance) -> None:
    # 1. start: the config summary, the worker's spawn and ready, the appliance's ready
    start = events(appliance, "appliance_start")[0]
    assert start["port"] == int(appliance.url.rsplit(":", 1)[1]) and start["host"] == "127.0.0.1"
    assert start["models"] == [MODEL] and start["workers"] == 1 and start["dtype"] == {MODEL: "auto"}
    first_pid = worker_pid(appliance)
    spawn = events(appliance, "worker_spawn")[0]
    assert (spawn["worker"], spawn["pid"], spawn["role"]) == (0, first_pid, "primary") and spawn["cores"]
    ready = events(appliance, "worker_ready", pid=first_pid)[0]
    assert ready["worker"] == 0 and ready["models"] == [MODEL] and ready["load_s"] > 0
    assert events(appliance, "appliance_ready")[0]["workers"] == 1
    assert any(e["process"] == "worker-0" for e in entries(appliance)), "the worker logs in the same format"
    for entry in entries(appliance):
        assert datetime.datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).utcoffset() == datetime.timedelta(0)

    # 2. a SIGKILLed worker: its exit with the cause, the respawn scheduled, a new spawn and ready
    assert first_pid is not None
    os.kill(first_pid, signal.SIGKILL)
    exit_ = wait_for_event(appliance, "worker_exit", pid=first_pid)
    assert (exit_["worker"], exit_["code"], exit_["cause"]) == (0, -signal.SIGKILL, "crash")
    assert exit_["reason"] == "killed by SIGKILL"
    respawn = wait_for_event(appliance, "worker_respawn_scheduled", worker=0)
    assert respawn["delay_s"] > 0 and respawn["level"] == "WARNING"
    wait_until(lambda: worker_pid(appliance) not in (None, first_pid), "a new worker up", appliance)
    appliance.worker_pids()  # noted for the leftover check
    second = wait_for_event(appliance, "worker_ready", pid=worker_pid(appliance))
    assert events(appliance, "worker_spawn", pid=second["pid"], worker=0)

    # 3. a job: submitted, running, done, each naming it
    status, _, answer = post(appliance.url + "/v1/jobs", {"model": MODEL, "inputs": [f"text {i}" for i in range(10)]})
    assert status == 202, answer
    job_id = answer["id"]
    done = wait_for_event(appliance, "job_done", job_id=job_id)
    assert (done["done"], done["failed"]) == (10, 0)
    submitted = events(appliance, "job_submitted", job_id=job_id)[0]
    assert (submitted["inputs"], submitted["chunks"], submitted["model"], submitted["task"]) == (10, 3, MODEL, "embed")
    assert events(appliance, "job_running", job_id=job_id)[0]["chunks"] == 3
    order = [e["event"] for e in entries(appliance) if e.get("job_id") == job_id]
    assert order == ["job_submitted", "job_running", "job_done"]

    # 4. stop: draining, the worker's planned exit, stopped with the exit code; still JSON throughout
    assert_clean_exit(appliance, appliance.stop())
    assert events(appliance, "appliance_draining")[0]["cause"] == "signal"
    assert events(appliance, "worker_exit", pid=second["pid"])[0]["cause"] == "planned"
    assert events(appliance, "appliance_stopped")[-1]["exit_code"] == 0
    assert not events(appliance, "http_access"), "the access log is off by default"
