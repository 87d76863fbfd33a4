"""bench/at_rest.py: a short real run of an idle appliance on a tiny static model, against a
second checkout (this one again, started from its own directory); every figure a finite number."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import bench.at_rest as at_rest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_short_run_reports_every_system(tiny_static: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = at_rest.main(["--model-path", str(tiny_static), "--settle", "0.5", "--seconds", "1", "--rounds", "1",
                         "--workers", "1", "--against", str(ROOT)])  # fmt: skip
    assert code == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["systems"]
    assert list(figures) == ["this checkout", str(ROOT)]
    for system, values in figures.items():
        assert all(math.isfinite(v) and v >= 0 for v in values.values()), (system, values)
        # a gateway at rest still wakes (its rescue ticks, the workers' stats), but not hundreds
        # of times a second: 2 ms ticks would read about 500
        assert 0 < values["gateway_wakes"] < 200, (system, values)


def test_the_figures_are_medians_over_the_rounds() -> None:
    samples = [at_rest.Sample("a", 1.0, 10.0, 2.0, 20.0), at_rest.Sample("a", 3.0, 30.0, 4.0, 40.0),
               at_rest.Sample("a", 5.0, 50.0, 6.0, 60.0), at_rest.Sample("b", 7.0, 70.0, 8.0, 80.0)]  # fmt: skip
    assert at_rest.summary(samples) == {
        "a": {"gateway_cpu_ms": 3.0, "gateway_wakes": 30.0, "workers_cpu_ms": 4.0, "workers_wakes": 40.0},
        "b": {"gateway_cpu_ms": 7.0, "gateway_wakes": 70.0, "workers_cpu_ms": 8.0, "workers_wakes": 80.0},
    }
