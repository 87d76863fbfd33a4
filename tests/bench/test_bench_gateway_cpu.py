"""bench/gateway_cpu.py: a short real run on a tiny static model, against a second checkout (this
one again, started from its own directory) and the HTTP floor; every figure a finite number."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import bench.gateway_cpu as gateway_cpu

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_short_run_reports_every_system(tiny_static: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = gateway_cpu.main(["--model-path", str(tiny_static), "--seconds", "0.5", "--warmup", "0.2", "--rounds", "1",
                             "--concurrency", "4", "--workers", "1", "--against", str(ROOT)])  # fmt: skip
    assert code == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["systems"]
    assert list(figures) == ["this checkout", str(ROOT), gateway_cpu.FLOOR]
    for system, values in figures.items():
        assert values["rps"] > 0, system
        assert all(math.isfinite(v) for v in values.values()), (system, values)
    assert figures["this checkout"]["gateway_us_per_request"] > 0
    assert figures[gateway_cpu.FLOOR]["workers_us_per_request"] == 0  # the floor has no workers


def test_each_system_takes_the_first_slot_in_turn() -> None:
    systems = ["this checkout", "base", "other"]
    firsts = [gateway_cpu.rotated(systems, round_)[0] for round_ in range(4)]
    assert firsts == ["this checkout", "base", "other", "this checkout"]
    assert sorted(gateway_cpu.rotated(systems, 1)) == sorted(systems)  # every system, once
    assert gateway_cpu.rotated([], 3) == []
