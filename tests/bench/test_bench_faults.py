"""bench/faults.py: fault windows and slot choice, and a short real run on a tiny model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import bench.faults as faults


def test_fault_windows_cover_kill_to_back_plus_tail_and_overlaps_count_once() -> None:
    run = faults.Run(t0=0.0, kills=[faults.Kill(0, 11, at=2.0, respawn_s=1.5), faults.Kill(1, 12, at=3.0),
                                    faults.Kill(0, 13, at=9.0, respawn_s=0.5)])  # fmt: skip
    windows = faults.fault_windows(run, tail=1.0)
    assert windows == [(2.0, 4.5), (3.0, float("inf")), (9.0, 10.5)]  # slot 1 never came back
    assert faults.covered(windows, duration=10.0) == pytest.approx(8.0)  # [2, 10], clipped to the run
    run.outcomes = [faults.Outcome(0.0, 1.0, 200, ""), faults.Outcome(1.5, 2.5, 200, ""),
                    faults.Outcome(4.0, 4.2, 503, "worker_unavailable")]  # fmt: skip
    inside, outside = faults.split(run, [(2.0, 4.5)])
    assert (len(inside), len(outside)) == (2, 1)  # in flight across the kill counts as faulty
    run.outcomes.append(faults.Outcome(2.2, 2.4, 503, "not_ready"))
    faults.attribute(run, windows)
    assert [k.failures for k in run.kills] == [1, 1, 0]  # 4.0-4.2 is in two windows: the latest kill's


def test_victims_are_taken_in_turn_and_never_a_slot_that_is_down_or_respawning() -> None:
    me = os.getpid()  # a live process, so ``owned`` holds with no parent check
    cards = [{"index": 0, "up": True, "pid": me}, {"index": 1, "up": True, "pid": me},
             {"index": 2, "up": False, "pid": me}, {"index": 3, "up": True, "pid": 0}]  # fmt: skip
    assert faults.pick_victim(cards, 1, set(), None)["index"] == 1
    assert faults.pick_victim(cards, 2, set(), None)["index"] == 0  # 2 down, 3 has no pid yet: wrap
    assert faults.pick_victim(cards, 1, {1}, None)["index"] == 0  # /stats may still show 1's dead pid
    assert faults.pick_victim(cards, 0, set(), parent=os.getppid() + 1) is None  # not the appliance's child
    assert faults.pick_victim(cards, 0, {0, 1}, None) is None


@pytest.mark.slow
def test_faults_bench_kills_workers_under_load_and_leaves_nothing_behind(
    tiny_transformer: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # short: a worker boot (torch import) takes ~10 s on a loaded 2-core box, and the run waits for it
    keys = tmp_path / "keys"
    keys.write_text("faults-key\n")  # the load and the /stats polls must both carry it
    argv = ["--model", "tiny", "--model-path", str(tiny_transformer), "--workers", "2", "--concurrency", "2",
            "--duration", "2.5", "--kill-every", "1", "--warmup", "0.5", "--request-timeout", "20",
            "--env", f"APPLIANCE_API_KEYS_FILE={keys}", "--api-key", "faults-key"]  # fmt: skip
    assert faults.main(argv) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["kills"] >= 2 and report["sent"] > 0
    assert len(report["respawn_s"]) == report["kills"] and all(s > 0 for s in report["respawn_s"])
    assert all(k["new_pid"] not in (0, k["pid"]) for k in report["kill_log"])
    # every request finished and is accounted for; the gateway itself (not killed) answered each one
    assert report["hung"] == 0
    assert report["sent"] == report["succeeded"] + report["failed"] == sum(
        p["requests"] + p["errors"] for p in (report["steady"], report["fault"]))
    assert sum(report["failed_by_status"].values()) == sum(report["failed_by_type"].values()) == report["failed"]
    assert "0" not in report["failed_by_status"], report["failure_examples"]
    assert "401" not in report["failed_by_status"], report["failure_examples"]
    assert report["target_zero_failures"] == (report["failed"] == 0)
    # stopped with SIGTERM and waited for (bench.launcher): nothing it or any of its workers ran is left
    assert report["appliance_exit_code"] == 0 and report["appliance_forced"] is False
    assert report["leftover_pids"] == [] and report["leftover_segments"] == []
