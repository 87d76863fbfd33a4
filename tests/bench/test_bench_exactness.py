"""bench/exactness.py: a smoke run on a tiny model, recorded into a results folder like every scenario."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import bench.__main__ as bench
from bench import exactness
from workers.runtimes.precision import SHORT_MAX_TOKENS


@pytest.mark.slow
def test_exactness_bench_measures_every_way_and_records_finite_figures(tiny_transformer: Path,
                                                                        tmp_path: Path) -> None:  # fmt: skip
    argv = ["exactness", "--quick", "--quiet", "--results", str(tmp_path), "--model-path", str(tiny_transformer)]
    assert bench.main(argv) == 0
    (folder,) = tmp_path.iterdir()
    results = json.loads((folder / "results.json").read_text())
    figures = results["figures"]
    assert figures and all(math.isfinite(f["value"]) for f in figures.values())
    summary = results["summary"]
    assert summary["dtype"] == "bfloat16" and summary["short_max_tokens"] == SHORT_MAX_TOKENS
    for way in ("reduced", "served"):
        part = summary["accuracy"][way]
        assert -1 <= part["lowest_cosine"] <= part["mean_cosine"] <= 1 + 1e-9
        assert sum(b["rows"] for b in part["by_tokens"].values()) == sum(summary["texts"].values())
    # the served way computes the short rows with float32 activations: closer than bf16 everywhere
    served, reduced = (summary["accuracy"][way]["by_tokens"] for way in ("served", "reduced"))
    short = [low for low in served if int(low) < SHORT_MAX_TOKENS]
    assert short and all(served[low]["lowest_cosine"] >= reduced[low]["lowest_cosine"] for low in short)
    for workload in exactness.WORKLOADS:
        speed = summary["speed"][workload]
        assert set(speed["sentences_per_s"]) == set(exactness.WAYS) and speed["over_reduced"]["reduced"] == 1.0
        assert speed["rounds_over_reduced"]["reduced"] == [1.0]
        assert all(v > 0 for v in speed["sentences_per_s"].values())
