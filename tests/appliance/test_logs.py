"""appliance/logs.py: the JSON and text formats of one record, and how a process is set up with them.

The real appliance's log in both formats is checked end to end by ``test_logs_integration.py``."""

from __future__ import annotations

import datetime
import io
import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator

import pytest

from appliance import logs


def record(message: str = "worker %d spawned", args: tuple[Any, ...] = (0,), level: int = logging.INFO,
           extra: dict[str, Any] | None = None, exc_info: Any = None) -> logging.LogRecord:  # fmt: skip
    """A record made the way ``Logger.info(..., extra=...)`` makes it."""
    return logging.getLogger("appliance.test").makeRecord("appliance.test", level, __file__, 1, message, args,
                                                          exc_info, extra=extra)  # fmt: skip


def as_json(rec: logging.LogRecord, process: str = "gateway") -> dict[str, Any]:
    line = logs.JsonFormatter(process).format(rec)
    assert "\n" not in line, "a record is one line"
    parsed = json.loads(line)
    assert isinstance(parsed, dict)
    return parsed


def test_json_carries_the_envelope_then_the_event_and_its_fields_in_order() -> None:
    rec = record(extra={"event": "worker_spawn", "worker": 0, "pid": 4242, "cores": [0, 1], "gpu": None})
    entry = as_json(rec, "worker-3")
    assert list(entry) == ["time", "level", "logger", "process", "event", "message", "worker", "pid", "cores", "gpu"]
    assert entry["level"] == "INFO" and entry["logger"] == "appliance.test" and entry["process"] == "worker-3"
    assert entry["event"] == "worker_spawn" and entry["message"] == "worker 0 spawned"
    assert (entry["worker"], entry["pid"], entry["cores"], entry["gpu"]) == (0, 4242, [0, 1], None)


def test_json_time_is_iso_8601_utc_with_milliseconds() -> None:
    rec = record()
    rec.created = datetime.datetime(2026, 11, 30, 6, 25, 4, 123456, tzinfo=datetime.timezone.utc).timestamp()
    stamp = as_json(rec)["time"]
    assert stamp == "2026-11-30T06:25:04.123Z"
    assert datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).utcoffset() == datetime.timedelta(0)


def test_a_line_without_an_event_says_null_and_has_no_fields() -> None:
    entry = as_json(record("plain %s", ("words",)))
    assert entry["event"] is None and entry["message"] == "plain words"
    assert set(entry) == {"time", "level", "logger", "process", "event", "message"}


def test_an_exception_is_serialised_into_the_same_one_line() -> None:
    try:
        raise ValueError("bad value\non two lines")
    except ValueError:
        rec = record("request %s failed", ("r1",), logging.ERROR, {"event": "boom"}, sys.exc_info())
    entry = as_json(rec)
    assert entry["exception"]["type"] == "ValueError"
    assert entry["exception"]["message"] == "bad value\non two lines"
    assert entry["exception"]["traceback"].startswith("Traceback (most recent call last)")
    assert "raise ValueError" in entry["exception"]["traceback"]


def test_fields_that_json_cannot_hold_become_text_and_never_hide_the_envelope() -> None:
    entry = as_json(record(extra={"event": "e", "path": Path("/srv/models"), "error": OSError(28, "no space"),
                                  "seen": {3, 1, 2}, "level": "mine"}))  # fmt: skip
    assert entry["path"] == "/srv/models" and "no space" in entry["error"] and entry["seen"] == [1, 2, 3]
    assert entry["level"] == "INFO"


def test_text_is_the_readable_line_then_the_event_and_fields_as_key_value() -> None:
    rec = record(extra={"event": "worker_exit", "worker": 0, "reason": "killed by SIGKILL", "code": -9,
                        "cores": [0, 1], "note": 'a "quoted" = b', "gpu": None})  # fmt: skip
    line = logs.TextFormatter("gateway").format(rec)
    head, _, tail = line.partition(" event=")
    assert head.endswith(" gateway INFO appliance.test: worker 0 spawned")
    assert tail == 'worker_exit worker=0 reason="killed by SIGKILL" code=-9 cores=[0,1] note="a \\"quoted\\" = b" gpu=null'


def test_text_without_fields_is_unchanged() -> None:
    assert logs.TextFormatter("worker-1").format(record("ready", ())).endswith(" worker-1 INFO appliance.test: ready")


@pytest.fixture
def root_logging() -> Iterator[None]:
    """``configure`` changes the root logger, warnings capture and the environment: put them back."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, os.environ.get(logs.FORMAT_ENV))
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    logging.captureWarnings(False)
    if saved[2] is None:
        os.environ.pop(logs.FORMAT_ENV, None)
    else:
        os.environ[logs.FORMAT_ENV] = saved[2]


def test_configure_writes_json_to_stderr_warnings_included_and_hands_the_format_down(
        root_logging: None, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    logs.configure("info", "json")
    logging.getLogger("appliance.x").info("up", extra={"event": "appliance_ready", "port": 1})
    logging.getLogger("appliance.x").debug("below the level")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("careful", UserWarning, stacklevel=1)
    lines = [json.loads(line) for line in stderr.getvalue().splitlines()]
    assert [(e["event"], e["logger"]) for e in lines] == [("appliance_ready", "appliance.x"), (None, "py.warnings")]
    assert os.environ[logs.FORMAT_ENV] == "json"


def test_a_child_process_takes_the_format_from_the_environment(root_logging: None) -> None:
    logs.configure("info", "json")
    child = ("from appliance import logs; import logging; "
             "logs.configure('info', logs.format_from_env(), process='worker-7'); "
             "logging.getLogger('appliance.worker').info('hi', extra={'event': 'e', 'n': 1})")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert done.returncode == 0, done.stderr
    entry = json.loads(done.stderr)
    assert (entry["process"], entry["event"], entry["n"]) == ("worker-7", "e", 1)


@pytest.mark.parametrize(("environ", "expected"), [({}, "text"), ({logs.FORMAT_ENV: "json"}, "json"),
                                                   ({logs.FORMAT_ENV: "yaml"}, "text")])  # fmt: skip
def test_format_from_env_falls_back_to_text(environ: dict[str, str], expected: str) -> None:
    assert logs.format_from_env(environ) == expected


def test_the_log_format_flag_reaches_the_config(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "appliance.cli", "check", "--log-format", "json"],
                          capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2],
                          env={**os.environ, "APPLIANCE_STATE_DIR": str(tmp_path)})  # fmt: skip
    assert 'log_format = "json"' in done.stdout, done.stdout + done.stderr
