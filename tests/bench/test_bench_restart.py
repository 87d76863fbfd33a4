"""bench/restart.py: the ratios, the worker's load line, and a short real run on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import bench.restart as restart


def test_compiled_figures_are_given_over_eager_and_over_their_own_first_start() -> None:
    eager = restart.Mode("eager", first_start=10.0, respawn=5.0, restart=8.0)
    compiled = restart.Mode("compiled", first_start=40.0, respawn=10.0, restart=12.0)
    assert restart.ratios([eager, compiled]) == {
        "compiled_first_over_eager_first": 4.0, "compiled_respawn_over_eager_respawn": 2.0,
        "compiled_restart_over_eager_restart": 1.5, "compiled_respawn_over_compiled_first": 0.25,
        "compiled_restart_over_compiled_first": 0.3}  # fmt: skip
    assert restart.ratios([eager]) == {}  # no baseline pair, no ratio


def test_the_workers_load_line_is_read() -> None:
    line = "worker-0 INFO model 'all-MiniLM-L6-v2' loaded from /x/y (cpu, float32, dim 384, max_length 256) in 31.4s"
    assert restart.LOADED.findall(line) == ["31.4"]


@pytest.mark.slow
def test_restart_bench_measures_a_start_a_respawn_and_a_restart(tiny_transformer: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    # eager only: a compile of even the tiny model takes minutes on a loaded 2-core box
    assert restart.main(["--model", "tiny", "--model-path", str(tiny_transformer), "--modes", "eager"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    eager = figures["eager"]
    assert eager["first_start"] > 0 and eager["respawn"] > 0 and eager["restart"] > 0
    assert len(eager["loads"]) == 3  # the first worker, its respawn, the restarted appliance's
