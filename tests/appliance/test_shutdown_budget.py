"""The one shutdown budget (``appliance/serving.py``) holds when a worker never answers ``Drain``.

A real appliance with one real worker, which the test freezes with SIGSTOP: it cannot read its ring,
answer ``Drain`` or exit by itself, exactly like a worker hung in the middle of a batch. On SIGTERM
the gateway must still be gone within ``shutdown_grace``, plus aiohttp's rounding of its deadlines
and the supervisor's wait after SIGKILL (``KILL_WAIT_S``): the total ``TimeoutStopSec`` in
``systemd/appliance.service`` is sized for, with exit status 0 (a drain that had to kill is still a
requested stop), no worker left and no ``/dev/shm`` segment left. Two stalls, each spending the
budget in a different stage: idle (the supervisor's wait for the drain) and holding a request
(aiohttp's wait for the handler, after which the router's and the supervisor's waits must get only
what is left). A stage granted the whole budget again would take two graces, which is more than the
bound allows.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from appliance.config import Config
from appliance.supervisor import KILL_WAIT_S
from harness import Appliance, assert_clean_exit, get, post

MODEL = "tiny"
UNIT = Path(__file__).resolve().parents[2] / "systemd" / "appliance.service"
AIOHTTP_ROUNDING_S = 2.0  # its two handler waits, each deadline rounded up to a whole second
GRACE_S = 12.0  # shutdown_grace under test
MARGIN_S = 3.0  # the interpreter's exit on a loaded box
BOUND_S = GRACE_S + AIOHTTP_ROUNDING_S + KILL_WAIT_S + MARGIN_S
HELD_S = 10.0  # for the held request to show in /stats
SETTINGS = {
    "APPLIANCE_SHUTDOWN_GRACE": str(GRACE_S),
    "APPLIANCE_CACHE_BYTES": "0",  # every request reaches the worker
    "APPLIANCE_REQUEST_TIMEOUT": "120",  # the held request outlives the shutdown
    "APPLIANCE_WORKER_TIMEOUT": "120",  # the frozen worker is not replaced before the SIGTERM
}

# A budget spent twice (two stages each granted shutdown_grace) must not fit under the bound.
assert 2 * GRACE_S > BOUND_S


@pytest.fixture
def stalled(launch: Callable[..., Appliance], tiny_transformer: Path) -> Appliance:
    """One worker, frozen with SIGSTOP once it serves; the ``launch`` fixture closes it (SIGKILL
    reaches a stopped process) whatever the outcome."""
    appliance = launch([{"name": MODEL, "path": str(tiny_transformer), "main": True}], workers=1, env=SETTINGS)
    os.kill(worker_pid(appliance), signal.SIGSTOP)
    return appliance


def worker_pid(appliance: Appliance) -> int:
    status, _, body = get(appliance.url + "/stats")
    assert status == 200
    appliance.worker_pids()  # noted for the orphan check
    (pid,) = [w["pid"] for w in body["workers"] if w["up"]]
    return int(pid)


def outstanding_inputs(appliance: Appliance) -> int:
    return sum(w["outstanding_inputs"] for w in get(appliance.url + "/stats")[2]["workers"])


def hold_a_request(appliance: Appliance) -> threading.Thread:
    """A request the frozen worker will never answer, in flight at the router when this returns."""
    client = threading.Thread(target=post_ignoring_errors, args=(appliance.url,), daemon=True)
    client.start()
    deadline = time.monotonic() + HELD_S
    while outstanding_inputs(appliance) == 0:
        assert time.monotonic() < deadline, "the request never reached the router"
        time.sleep(0.05)
    return client


def post_ignoring_errors(url: str) -> None:
    try:  # the appliance cuts it short on its way out; how is not what this test checks
        post(url + "/v1/embeddings", {"model": MODEL, "input": ["a request the frozen worker holds"]},
             timeout=BOUND_S + 30)  # fmt: skip
    except OSError:
        pass


def stop_and_time(appliance: Appliance) -> tuple[int, float]:
    """SIGTERM; (exit code, seconds to exit). Past the bound it is SIGKILLed (``forced``)."""
    started = time.monotonic()
    appliance.send(signal.SIGTERM)
    code = appliance.wait_exit(timeout=BOUND_S)
    return code, time.monotonic() - started


@pytest.mark.slow
@pytest.mark.parametrize("holding", [False, True], ids=["idle", "holding-a-request"])
def test_sigterm_with_a_worker_that_ignores_drain_stays_within_the_budget(stalled: Appliance, holding: bool) -> None:
    client = hold_a_request(stalled) if holding else None
    code, took = stop_and_time(stalled)
    assert not stalled.forced, f"still running {BOUND_S:.0f}s after SIGTERM\n{stalled.log_tail()}"
    # the frozen worker was waited for: the budget was spent, not skipped
    assert took >= GRACE_S - 1.0, f"exited after {took:.1f}s, before shutdown_grace\n{stalled.log_tail()}"
    assert took <= BOUND_S, f"exited after {took:.1f}s, past the {BOUND_S:.0f}s bound\n{stalled.log_tail()}"
    assert_clean_exit(stalled, code)
    assert "did not drain" in stalled.log(), "the frozen worker was not killed by the supervisor"
    if client is not None:
        client.join(timeout=10)
        assert not client.is_alive(), "the held request's client is still waiting after the appliance exited"


def test_the_unit_stop_timeout_covers_the_default_budget() -> None:
    """systemd SIGKILLs the whole cgroup at ``TimeoutStopSec``: it must come after the appliance's
    own worst case under the default ``shutdown_grace``, with room to spare."""
    (timeout,) = re.findall(r"^TimeoutStopSec=(\d+)$", UNIT.read_text(), flags=re.MULTILINE)
    worst = Config().shutdown_grace + AIOHTTP_ROUNDING_S + KILL_WAIT_S
    assert float(timeout) >= worst + MARGIN_S, f"TimeoutStopSec={timeout} leaves no margin over {worst:g}s"
