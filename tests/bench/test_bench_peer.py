"""`bench serve --url URL --api openai`: the same load against any running server, here a
baseline design started by the test, recorded into a results folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.__main__ import main as bench_main
from bench.baselines.launch import running


@pytest.mark.slow
def test_serve_measures_a_peer_server_through_its_api(tiny_transformer: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    with running("threadpool", model="tiny", model_path=str(tiny_transformer)) as url:
        argv = ["serve", "--quiet", "--results", str(tmp_path), "--url", url, "--api", "openai", "--model", "tiny",
                "--model-path", str(tiny_transformer), "--raw-seconds", "0.3", "--concurrency", "1,2",
                "--batches", "1,3", "--seconds", "0.5", "--warmup", "0.2"]  # fmt: skip
        assert bench_main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    points = summary["points"]
    assert {(p["batch"], p["concurrency"]) for p in points} == {(1, 1), (1, 2), (3, 1), (3, 2)}  # throughput only
    assert all(p["requests"] > 0 and p["errors"] == 0 for p in points)
    (folder,) = tmp_path.iterdir()
    results = json.loads((folder / "results.json").read_text())
    assert results["config"]["url"] == url and results["config"]["api"] == "openai"
    assert {"results.json", "report.md", "throughput.png", "latency.png"} <= {p.name for p in folder.iterdir()}
