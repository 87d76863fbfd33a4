"""Lent cores end to end: a real appliance with ``lend_idle_cores``, two CPU workers of one core
each, and a lone request after a pause computed on both cores (``gateway/lending.py``,
``workers/pinning.py``, ``workers/loans.py``)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from harness import get, post, serving

pytestmark = pytest.mark.slow


def worker_counters(url: str) -> list[dict[str, int]]:
    status, _, stats = get(url + "/stats")
    assert status == 200
    return list(stats["workers"])


def test_a_lone_request_after_a_pause_is_computed_on_the_idle_worker_s_core_too(
        tiny_transformer: Path, tmp_path: Path) -> None:  # fmt: skip
    assert len(os.sched_getaffinity(0)) >= 2, "lending needs two cores: one worker each"
    model = {"name": "tiny", "path": str(tiny_transformer), "main": True, "dtype": "float32"}
    with serving(tmp_path, [model], workers=2, env={"APPLIANCE_LEND_IDLE_CORES": "true",
                                                    "APPLIANCE_CACHE_BYTES": "0"}) as appliance:  # fmt: skip
        for i in range(3):
            time.sleep(0.2)  # every worker idle for longer than IDLE_BEFORE_LENDING_S
            status, _, body = post(appliance.url + "/api/embed", {"model": "tiny", "input": f"alone {i}"})
            assert status == 200 and len(body["embeddings"]) == 1
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # worker counters arrive with its next Stats
            counters = worker_counters(appliance.url)
            lent = sum(c["widened_batches"] + c["declined_loans"] for c in counters)
            if lent == 3:
                break
            time.sleep(0.2)
        # every one went to a worker that computed it on the lent core, or declined the loan
        # because a pass before found that core busy (this box may be running other tests)
        assert lent == 3, counters
        assert sum(c["widened_batches"] for c in counters) >= 1
        assert all(c["threads"] == 1 for c in counters)  # back on their own core between batches
