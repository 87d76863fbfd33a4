"""bench/compare.py's arithmetic: interleaving order, medians and spreads over rounds, ratios to
the raw limit and to the appliance, the targets as figures. (`all --quick` runs it for real.)"""

from __future__ import annotations

import math

import pytest

from bench import compare
from bench.loadgen import LoadResult
from bench.points import Point


def result(sps: float, p99: float, errors: int = 0) -> LoadResult:
    return LoadResult(Point("x", 1, 1, 10, errors, 1.0, sps, sps, p99 / 2, p99, p99), {})


def test_every_system_takes_every_place_in_turn() -> None:
    systems = ["appliance", "inline", "threadpool"]
    orders = [compare.rotated(systems, turn) for turn in range(3)]
    assert [order[0] for order in orders] == systems and all(sorted(o) == sorted(systems) for o in orders)


def test_rows_are_medians_over_rounds_with_ratios() -> None:
    samples = {("appliance", 8): [result(100, 50), result(120, 40), result(110, 60)],
               ("microbatch", 8): [result(55, 90, errors=1)], ("inline", 1): [result(30, 10)]}  # fmt: skip
    rows = {(r.system, r.concurrency): r for r in compare.combine(samples, raw=200.0)}
    own = rows[("appliance", 8)]
    assert (own.sentences_per_s, own.p99_ms, own.ratio_to_raw, own.ratio_to_appliance) == (110, 50, 0.55, 1.0)
    assert own.spread == pytest.approx(20 / 110, abs=1e-4)
    assert rows[("microbatch", 8)].ratio_to_appliance == 0.5 and rows[("microbatch", 8)].errors == 1
    assert rows[("inline", 1)].ratio_to_appliance == 0.0  # no appliance point at c1 to compare with


def test_the_targets_are_figures_against_the_best_baseline() -> None:
    samples = {("appliance", 32): [result(200, 100)], ("microbatch", 32): [result(80, 250)],
               ("inline", 32): [result(90, 400)], ("appliance", 1): [result(20, 5)], ("inline", 1): [result(30, 4)]}  # fmt: skip
    rows = compare.combine(samples, raw=100.0)
    claims = compare.targets_met(rows, {"p99_over_p50": 3.0})
    assert claims == {"c32.over_best_baseline": pytest.approx(200 / 90, abs=1e-3),
                      "c32.p99_ratio_to_best_baseline": 0.25, "open.p99_over_p50": 3.0}  # fmt: skip
    found = compare.figures_of(100.0, [90.0, 110.0], rows, None, claims)
    assert found["raw_limit_sps"] == {"value": 100.0, "unit": "sentences/s", "spread": 0.2}
    assert found["appliance.c32.p99_ms"]["unit"] == "ms" and found["inline.c32.ratio_to_appliance"]["unit"] == "x"
    assert all(math.isfinite(entry["value"]) for entry in found.values())
    assert "| appliance | 32 | 200.0 | 2.00 | 1.00 |" in compare.table(rows)


def test_an_unknown_system_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        compare.parse(["--systems", "appliance,nginx"])
    assert "unknown systems ['nginx']" in capsys.readouterr().err
