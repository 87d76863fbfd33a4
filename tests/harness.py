"""The real appliance for integration tests, and the small HTTP client they talk to it with.

Starting, stopping and the leftover checks are ``bench.launcher``'s, the one launcher tests and
benchmarks share (GPUs hidden, its own session, SIGTERM then SIGKILL after a bound); this module
adds the test settings and the assertions. Start one with the ``launch`` fixture
(``tests/conftest.py``) in a test, or ``serving`` in a module fixture: either closes the
appliance (stop, kill, unlink) whatever the test's outcome.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from bench.launcher import Appliance, LaunchError, Leftovers, free_port, segments_of, start

__all__ = ["Appliance", "LaunchError", "Leftovers", "Reply", "assert_clean_exit", "free_port", "get", "post",
           "segments_of", "serving", "start_appliance"]  # fmt: skip

READY_TIMEOUT_S = 120.0
# The appliance's own bounds, shorter than its defaults: a failing test fails in minutes, not ten.
TEST_SETTINGS = {"APPLIANCE_READY_TIMEOUT": "90", "APPLIANCE_SHUTDOWN_GRACE": "20"}


@dataclass
class Reply:
    """One HTTP answer as the in-thread test servers' clients see it."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def start_appliance(tmp_path: Path, models: list[dict[str, Any]], *, workers: int = 2,
                    env: dict[str, str] | None = None, wait_ready: bool = True,
                    headers: dict[str, str] | None = None) -> Appliance:  # fmt: skip
    """The appliance serving ``models`` with every worker up (unless not ``wait_ready``); state and
    log under ``tmp_path``. The caller closes it: ``appliance.close()``."""
    return start(models, workdir=tmp_path, workers=workers, env={**TEST_SETTINGS, **(env or {})},
                 headers=headers, wait=wait_ready, ready_timeout=READY_TIMEOUT_S)  # fmt: skip


@contextlib.contextmanager
def serving(tmp_path: Path, models: list[dict[str, Any]], **options: Any) -> Iterator[Appliance]:
    """``start_appliance``; after the ``with`` body, a clean SIGTERM exit is asserted. Closed
    either way (stopped, SIGKILLed past the bound, segments unlinked)."""
    with contextlib.closing(start_appliance(tmp_path, models, **options)) as appliance:
        yield appliance
        assert_clean_exit(appliance, appliance.stop())


def assert_clean_exit(appliance: Appliance, code: int) -> None:
    """Exit 0 within the stop bound, no segment left in /dev/shm, no orphan worker."""
    assert code == 0 and not appliance.forced, (
        f"exit code {code}{' (SIGKILLed after the stop bound)' if appliance.forced else ''}\n{appliance.log_tail()}")
    left = appliance.leftovers()
    assert not left.segments, f"shared-memory segments left behind: {left.segments}"
    assert not left.pids, f"orphan processes: {left.pids}"


def post(url: str, body: Any, timeout: float = 30.0, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})  # fmt: skip
    return _answer(request, timeout)


def get(url: str, timeout: float = 10.0, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    return _answer(urllib.request.Request(url, headers=headers or {}), timeout)


def _answer(request: urllib.request.Request, timeout: float) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON body) for any status."""
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read() or b"null")
