"""bench/ipc.py: a tiny run of `python -m bench ipc` ends with the JSON line and leaves no segment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from appliance.ipc.segment import SHM_DIR

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"ring_median_us", "pipe_median_us", "queue_median_us", "ring_rps", "pipe_rps", "queue_rps"}


def test_quick_run_prints_a_table_and_the_json_line_last(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "bench", "ipc", "--rounds", "2", "--latency-trips", "50",
            "--throughput-trips", "300", "--window", "8", "--ring-bytes", "65536",
            "--results", str(tmp_path)]  # the results folder, not the checkout's bench/results  # fmt: skip
    run = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    lines = out.strip().splitlines()
    assert [line.split()[0] for line in lines[2:5]] == ["ring", "pipe", "queue"]
    summary = json.loads(lines[-1])
    assert KEYS <= summary.keys()
    assert all(summary[key] > 0 for key in KEYS)
    assert summary["rounds"] == 2
    ring_stats = summary["ring_stats"]
    assert ring_stats["sent"] == ring_stats["received"] == 2 * (50 + 300) + 50 + 300  # rounds + warm-up
    assert not [name for name in os.listdir(SHM_DIR) if name.startswith(f"appl-{run.pid}-")]
