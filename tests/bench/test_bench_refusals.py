"""bench/refusals.py: a smoke run on the tiny model, whose counts are exact: the per-item request
is one worker record and one send of each input; the one-at-a-time baseline one record per
refused input plus one, each sending every input still live."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import bench.refusals as refusals


@pytest.mark.slow
def test_refusals_bench_counts_one_record_against_one_per_refusal(tiny_transformer: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    argv = ["--model", "tiny", "--model-path", str(tiny_transformer), "--dtype", "float32", "--inputs", "24",
            "--refused", "4"]  # fmt: skip
    assert refusals.main(argv) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    failed = report["refused"]  # the 4 made too long, and any corpus sentence over the tiny model's 128 tokens
    assert failed >= 4
    assert report["per_item"] == {"http_calls": 1, "inputs_sent": 24, "failed": failed, "worker_records": 1,
                                  "inputs_computed": 24 - failed}  # fmt: skip
    sends = sum(24 - k for k in range(failed + 1))  # every round sends what is still live
    assert report["one_at_a_time"] == {"http_calls": failed + 1, "inputs_sent": sends, "failed": failed,
                                       "worker_records": failed + 1, "inputs_computed": 24 - failed}  # fmt: skip
    assert report["records_over_baseline"] == round(1 / (failed + 1), 4)
    assert report["sends_over_baseline"] == round(24 / sends, 4)
