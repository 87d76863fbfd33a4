"""bench/split.py, bench/lone.py and bench/idle.py: smoke runs of the scenarios on a tiny model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import bench.idle as idle
import bench.lone as lone
import bench.split as split


@pytest.mark.slow
def test_split_bench_alternates_both_policies_on_a_tiny_model(tiny_transformer: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    argv = ["--model-path", str(tiny_transformer), "--dtype", "float32", "--clients", "8", "--seconds", "0.2",
            "--rounds", "2"]  # fmt: skip
    assert split.main(argv) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [(r["round"], r["policy"]) for r in report["rounds"]] == [(0, "whole"), (0, "split"), (1, "split"),
                                                                     (1, "whole")]  # fmt: skip
    assert all(r["sentences_per_s"] > 0 and r["padding_ratio"] >= r["computed_padding_ratio"] >= 1
               for r in report["rounds"])  # fmt: skip
    assert len(report["round_ratios"]) == 2 and report["split_over_whole"] > 0


@pytest.mark.slow
def test_lone_bench_times_every_mode_with_the_other_cores_busy(tiny_transformer: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert lone.main(["--model-path", str(tiny_transformer), "--dtype", "float32", "--forwards", "4",
                      "--busy", "1"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report["figures"]) == set(lone.MODES) and report["busy"] == 1
    assert all(f["p50_ms"] > 0 for f in report["figures"].values()) and report["over_one"]["one"] == 1.0
    assert 0 < report["all_cpu_share"]["p1"] <= report["all_cpu_share"]["p50"]


@pytest.mark.slow
def test_idle_bench_times_every_gap_and_gives_the_process_its_cores_back(tiny_transformer: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    allowed = os.sched_getaffinity(0)
    assert idle.main(["--model-path", str(tiny_transformer), "--dtype", "float32", "--forwards", "4",
                      "--gap-ms", "2"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report["figures"]) == set(idle.MODES) and report["over_none"]["none"] == 1.0
    assert all(f["p50_ms"] > 0 for f in report["figures"].values())
    assert os.sched_getaffinity(0) == allowed
