"""Log lines: one per event, as readable text or as one JSON object a line, alike in every process.

A call site names its event and passes the event's fields as structured data, through logging's
own ``extra=``, never only inside the message::

    log.info("worker %d spawned: pid %d", i, pid, extra={"event": "worker_spawn", "worker": i, "pid": pid})

Every attribute a record carries beyond ``logging.LogRecord``'s own is a field. The two formats
(``log_format`` in the config) write the same record as:

- ``text``: the readable line the appliance always wrote, then ``event=...`` and each field as
  ``key=value`` (a value with a space, a quote or an ``=`` in it is JSON-quoted)::

      2026-11-30 06:25:04,123 gateway INFO appliance.supervisor: worker 0 spawned: pid 4242 event=worker_spawn worker=0 pid=4242

- ``json``: one object per line, keys in this order: ``time`` (ISO 8601, UTC, milliseconds),
  ``level``, ``logger``, ``process`` (``gateway`` or ``worker-N``), ``event`` (null for a line
  that names none, say a library's), ``message``, then the fields; ``exception``
  (``{type, message, traceback}``) when the record carries one. Newlines inside a message or a
  traceback stay escaped, so a line is always a whole record.

Workers are separate interpreters started by the supervisor: ``configure`` in the gateway puts
the format in the environment (``FORMAT_ENV``, the config's own variable), which every worker
inherits, and ``workers/main.py`` configures itself from ``format_from_env``.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
import traceback
from typing import Any, Literal, Mapping, get_args

import msgspec

LogFormat = Literal["text", "json"]
FORMATS: tuple[str, ...] = get_args(LogFormat)
FORMAT_ENV = "APPLIANCE_LOG_FORMAT"
TEXT_LAYOUT = "%(asctime)s {process} %(levelname)s %(name)s: %(message)s"
# A record's own attributes; anything else on it came in through ``extra=`` and is a field.
# "message" and "asctime" are set by formatting; "taskName" exists from Python 3.12 on.
RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName", "event"}  # fmt: skip


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The event's fields: what ``extra=`` put on the record, in the order it was given."""
    return {key: value for key, value in vars(record).items() if key not in RECORD_ATTRIBUTES}


def event_of(record: logging.LogRecord) -> str | None:
    event = getattr(record, "event", None)
    return None if event is None else str(event)


class TextFormatter(logging.Formatter):
    """Today's readable line with ``event=`` and the fields appended as ``key=value``."""

    def __init__(self, process: str) -> None:
        super().__init__(TEXT_LAYOUT.format(process=process))

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        line = super().formatMessage(record)
        event = event_of(record)
        pairs = ([f"event={event}"] if event else []) + [f"{k}={text_value(v)}" for k, v in fields_of(record).items()]
        return f"{line} {' '.join(pairs)}" if pairs else line


def text_value(value: Any) -> str:
    """A field's value as one shell-like token: bare when it reads unambiguously, else JSON."""
    if isinstance(value, str):
        return value if value and not any(c in value for c in ' "=\n\t') else json.dumps(value)
    return encode(value).decode()


def _fallback(value: Any) -> Any:
    # a field that is not JSON (a Path, an exception, a set): its text, not a lost line
    return sorted(value, key=str) if isinstance(value, (set, frozenset)) else str(value)


_ENCODER = msgspec.json.Encoder(enc_hook=_fallback)


def encode(value: Any) -> bytes:
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError, OverflowError):  # a hook that failed too, or a huge int
        return _ENCODER.encode(str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "process": self.process,
            "event": event_of(record),
            "message": record.getMessage(),
        }
        for key, value in fields_of(record).items():
            entry.setdefault(key, value)  # a field never hides one of the keys above
        if record.exc_info and record.exc_info[1] is not None:
            entry["exception"] = exception_entry(record.exc_info[1])
        if record.stack_info:
            entry["stack"] = record.stack_info
        return encode(entry).decode()


def iso_time(created: float) -> str:
    """``2026-11-30T06:25:04.123Z``: ISO 8601, UTC, milliseconds."""
    moment = datetime.datetime.fromtimestamp(created, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def exception_entry(error: BaseException) -> dict[str, str]:
    return {"type": type(error).__name__, "message": str(error),
            "traceback": "".join(traceback.format_exception(error))}  # fmt: skip


def formatter(log_format: str, process: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter(process)
    return TextFormatter(process)


def configure(level: str, log_format: str, process: str = "gateway") -> None:
    """Send every log record of this process to stderr in ``log_format``, from ``level`` up, and
    hand the format to the processes it starts. Python's warnings become records too, so what
    Python writes to a json stderr is JSON lines only (a native library writing to the descriptor
    itself is beyond reach)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format, process))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)
    os.environ[FORMAT_ENV] = log_format  # order matters: before any worker is spawned


def format_from_env(environ: Mapping[str, str] = os.environ) -> str:
    """The format a parent handed down (``configure``); text when none or an unknown one."""
    chosen = environ.get(FORMAT_ENV, "text")
    return chosen if chosen in FORMATS else "text"
