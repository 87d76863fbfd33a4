"""bench/reporting/figures.py and record.py: figure names and units, noise, and a written folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.reporting import figures as figs
from bench.reporting.record import Run, new_folder, options, point_rows


@pytest.mark.parametrize("key, unit", [("raw_limit_sps", "sentences/s"), ("points.sentences_per_s", "sentences/s"),
                                       ("rps", "requests/s"), ("p99_ms", "ms"), ("respawn_s", "s"),
                                       ("ratio_to_raw", "x"), ("repeat_0.6_over_0", "x"), ("errors", "count"),
                                       ("float.ollama_1x384.orjson.us", "us")])  # fmt: skip
def test_units_are_read_off_the_names(key: str, unit: str) -> None:
    assert figs.unit_of(key) == unit


def test_points_are_named_by_their_identity_not_their_position() -> None:
    summary = {"raw_limit_sps": 200.0, "ok": True, "model": "m", "missing": None,
               "points": [{"scenario": "embed", "batch": 1, "concurrency": 8, "rps": 10.0, "p99_ms": 5.0},
                          {"scenario": "embed", "batch": 1, "concurrency": 8, "rps": 11.0, "p99_ms": 6.0}]}  # fmt: skip
    found = figs.flatten(summary)
    assert found["raw_limit_sps"] == {"value": 200.0, "unit": "sentences/s"}
    assert found["points[scenario=embed/batch=1/concurrency=8].rps"]["value"] == 10.0
    assert found["points[scenario=embed/batch=1/concurrency=8#2].p99_ms"] == {"value": 6.0, "unit": "ms"}
    assert not any(name.endswith((".batch", ".concurrency", "ok", "model", "missing")) for name in found)
    assert figs.flatten({"raw_runs": [1.0, 2.0]})["raw_runs[1]"]["unit"] == "sentences/s"


def test_noise_is_the_spread_of_the_repeated_raw_limit() -> None:
    assert figs.noise_of({"raw_runs": [90.0, 110.0]}) == pytest.approx(0.2)
    assert figs.noise_of({"raw_runs": [100.0]}) is None and figs.noise_of([]) is None
    assert figs.all_finite({"a": figs.figure(1.0, "x"), "b": figs.figure(math.nan, "x")}) == ["b"]


def test_a_run_writes_its_folder(tmp_path: Path) -> None:
    folder = new_folder(tmp_path)
    assert new_folder(tmp_path) != folder  # two runs within a second do not share a folder
    rows = [{"system": s, "concurrency": c, "sentences_per_s": 10.0 * c, "p50_ms": 1.0 * c, "p99_ms": 2.0 * c}
            for s in ("a", "b") for c in (1, 8)]  # fmt: skip
    written = Run("demo", ["--x", "1"], {"x": 1}).write(folder, summary={"k": 1}, figures={"k": figs.figure(1, "count")},
                                                        noise=0.05, tables="| t |", rows=rows)  # fmt: skip
    assert [p.name for p in written] == ["results.json", "report.md", "throughput.png", "latency.png"]
    results = json.loads((folder / "results.json").read_text())
    assert results["command"] == "appliance bench demo --x 1" and results["machine"]["cores"] >= 1
    assert results["versions"]["torch"] and results["config"] == {"x": 1} and results["noise"] == 0.05
    assert "![throughput](throughput.png)" in (folder / "report.md").read_text()


def test_plot_rows_come_from_points_with_two_concurrencies_or_more() -> None:
    points = [{"scenario": "embed", "batch": 1, "concurrency": c, "sentences_per_s": 1.0, "p50_ms": 1.0, "p99_ms": 1.0}
              for c in (1, 4)] + [{"scenario": "hit", "batch": 1, "concurrency": 4, "sentences_per_s": 1.0,
                                   "p50_ms": 1.0, "p99_ms": 1.0}]  # fmt: skip
    assert {row["system"] for row in point_rows({"points": points})} == {"embed x1"}


def test_the_dispatcher_options_are_taken_out_of_the_scenario_argv() -> None:
    assert options(["--seconds", "1", "--quiet", "--results", "/tmp/r"]) == (True, Path("/tmp/r"), ["--seconds", "1"])
    assert options(["--res", "x"])[2] == ["--res", "x"]  # no abbreviations: a scenario's own option stays its own
