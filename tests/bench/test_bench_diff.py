"""bench/diff.py (also as `appliance bench diff`): changes beyond either run's noise are flagged,
better or worse by unit, and a regression exits 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.cli import main as appliance_main
from bench import diff


def folder(path: Path, noise: float | None, **values: tuple[float, str]) -> Path:
    path.mkdir()
    figures = {name: {"value": value, "unit": unit} for name, (value, unit) in values.items()}
    (path / "results.json").write_text(json.dumps({"scenario": "compare", "started": "t", "noise": noise,
                                                   "figures": figures}))  # fmt: skip
    return path


def test_only_changes_beyond_the_noise_are_flagged(tmp_path: Path) -> None:
    old = folder(tmp_path / "old", 0.05, sps=(100.0, "sentences/s"), p99_ms=(50.0, "ms"), drift=(100.0, "sentences/s"),
                 errors=(0.0, "count"), only_old=(1.0, "x"))  # fmt: skip
    new = folder(tmp_path / "new", 0.03, sps=(130.0, "sentences/s"), p99_ms=(80.0, "ms"), drift=(104.0, "sentences/s"),
                 errors=(3.0, "count"))  # fmt: skip
    found = {c.name: c for c in diff.changes(diff.load(old), diff.load(new), min_noise=0.02)}
    assert set(found) == {"sps", "p99_ms", "errors"}  # a 4% drift is inside the 5% noise
    assert (found["sps"].verdict, found["p99_ms"].verdict, found["errors"].verdict) == ("better", "worse", "changed")
    assert found["sps"].noise == 0.05


def test_a_figure_own_spread_widens_its_noise(tmp_path: Path) -> None:
    old = folder(tmp_path / "old", 0.01, sps=(100.0, "sentences/s"))
    new = folder(tmp_path / "new", 0.01, sps=(115.0, "sentences/s"))
    data = json.loads((new / "results.json").read_text())
    data["figures"]["sps"]["spread"] = 0.2
    (new / "results.json").write_text(json.dumps(data))
    assert diff.changes(diff.load(old), diff.load(new), min_noise=0.02) == []


def test_a_run_without_measured_noise_is_held_to_the_default(tmp_path: Path) -> None:
    old = folder(tmp_path / "old", None, sps=(100.0, "sentences/s"))
    new = folder(tmp_path / "new", None, sps=(108.0, "sentences/s"))
    assert diff.changes(diff.load(old), diff.load(new), min_noise=0.02) == []


def test_a_regression_exits_1_through_the_appliance_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = folder(tmp_path / "old", 0.02, sps=(100.0, "sentences/s"))
    slower = folder(tmp_path / "slower", 0.02, sps=(70.0, "sentences/s"))
    assert appliance_main(["bench", "diff", str(old), str(slower)]) == 1
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["worse"] == ["sps"]
    assert appliance_main(["bench", "diff", str(old), str(old / "results.json")]) == 0
