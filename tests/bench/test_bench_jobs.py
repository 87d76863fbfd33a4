"""bench/jobs.py: a short real run on a tiny model prints every figure as a finite number."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench import jobs

pytestmark = pytest.mark.slow


def test_jobs_bench_measures_every_figure_on_a_tiny_model(tiny_transformer: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    argv = ["--model", "tiny", "--model-path", str(tiny_transformer), "--workers", "2", "--job-size", "600",
            "--stream-size", "300", "--concurrency", "2", "--seconds", "1", "--warmup", "0.3", "--raw-seconds", "0.5"]
    assert jobs.main(argv) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["job_status"] == "SUCCESS" and report["job_size"] == 600
    for key in ("raw_limit_sps", "job_sps", "job_over_raw", "first_result_s", "batch_s", "first_result_over_batch",
                "p99_alone_ms", "p99_with_job_ms", "p99_with_job_over_alone"):
        assert isinstance(report[key], (int, float)) and math.isfinite(report[key]) and report[key] > 0, key
    assert report["first_result_s"] <= report["stream_s"]
    assert all(point["requests"] > 0 and point["errors"] == 0 for point in report["points"])
