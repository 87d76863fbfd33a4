"""`appliance serve` lifecycle with real processes: graceful SIGTERM and boot failure."""

from __future__ import annotations

import concurrent.futures
import signal
import time
from pathlib import Path

import pytest

from harness import assert_clean_exit, post, segments_of, start_appliance

pytestmark = pytest.mark.slow


def test_sigterm_with_200_requests_in_flight_completes_every_accepted_one(tmp_path: Path,
                                                                           tiny_transformer: Path) -> None:  # fmt: skip
    models = [{"name": "tiny", "path": str(tiny_transformer), "main": True}]
    appliance = start_appliance(tmp_path, models, workers=2)
    texts = [f"sentence number {i} with some words " * 8 for i in range(16)]

    def one(i: int) -> int:
        try:
            return post(appliance.url + "/api/embed", {"model": "tiny", "input": texts}, timeout=60)[0]
        except OSError:
            return -1  # refused: the listener had closed before this request was accepted

    with concurrent.futures.ThreadPoolExecutor(200) as pool:
        futures = [pool.submit(one, i) for i in range(200)]
        time.sleep(0.3)  # let requests get accepted and reach the workers
        appliance.process.send_signal(signal.SIGTERM)
        statuses = [f.result(timeout=90) for f in futures]
    code = appliance.process.wait(60)  # no second signal: that would mean "stop now"
    assert_clean_exit(appliance, code)
    accepted = [s for s in statuses if s != -1]
    assert accepted, "no request was accepted before the signal"
    # Accepted work completes; a request arriving on a kept-alive connection while draining is refused
    # with a clear 503, never dropped or failed.
    assert set(accepted) <= {200, 503}, statuses
    assert statuses.count(200) > 0


def test_boot_failure_exits_non_zero_naming_the_model_without_looping(tmp_path: Path, tiny_transformer: Path) -> None:
    # The directory exists (so the start-up check passes) but holds no loadable model: the worker
    # itself must fail to load it, exit with the load-failure code, and not be respawned.
    broken = tmp_path / "no-such-model"
    broken.mkdir()
    (broken / "config.json").write_text("{ this is not json")
    models = [
        {"name": "tiny", "path": str(tiny_transformer), "main": True},
        {"name": "broken-model", "path": str(broken), "kind": "transformer"},
    ]
    appliance = start_appliance(tmp_path, models, workers=1, wait_ready=False)
    try:
        code = appliance.process.wait(120)
    finally:
        if appliance.process.poll() is None:
            appliance.process.kill()
    log = appliance.log()
    assert code != 0
    assert "broken-model" in log and "no-such-model" in log
    assert log.count("spawned") == 1, "the supervisor respawned a worker that cannot load its model"
    assert segments_of(appliance.process.pid) == []


def test_check_rejects_a_missing_model_path_before_serving(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = tmp_path / "a.toml"
    config.write_text('[[models]]\nname = "m"\npath = "/nonexistent/model"\nmain = true\n')
    result = subprocess.run([sys.executable, "-m", "appliance.cli", "check", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 1
    assert "model 'm'" in result.stderr and "/nonexistent/model" in result.stderr
    assert "port = 11435" in result.stdout
