"""bench/corpus.py and bench/raw.py: the fixed corpus, and a smoke run of the raw benchmark on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import bench.raw as raw
from appliance.config import ModelConfig
from bench.corpus import sentences
from workers.runtimes import load_runtime


def test_corpus_is_large_deterministic_and_prose_sized() -> None:
    everything = sentences()
    assert len(everything) >= 5000
    assert len(set(everything)) == len(everything), "deduplicated"
    assert all(3 <= len(s.split()) <= 60 and s[0].isupper() and s[-1] in ".!?" for s in everything)
    assert sentences(100) == everything[:100] == sentences(100, seed=0)
    assert sentences(100, seed=1) != sentences(100) and sorted(sentences(seed=1)) == sorted(everything)
    with pytest.raises(ValueError, match="holds"):
        sentences(len(everything) + 1)


@pytest.mark.slow
def test_raw_bench_smoke_on_tiny_models(tiny_transformer: Path, tiny_static: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.setattr(raw, "SORT_WINDOW", 16)  # keeps the batch-128 points short
    argv = ["--model", str(tiny_transformer), "--static", str(tiny_static), "--seconds", "0.02", "--sentences", "300"]
    assert raw.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    report = json.loads(lines[-1])
    threads = sorted({1, raw.cores()})
    expected = {(b, o, t) for t in threads for b in raw.BATCHES for o in (raw.ORDERS if b > 1 else ("arrival",))}
    for part in (report, report["static"]):
        points = {(r["batch"], r["order"], r["threads"]): r for r in part["results"]}
        assert set(points) == expected and all(r["sps"] > 0 and r["sentences"] > 0 for r in points.values())
        assert part["raw_limit_sps"] == points[(32, "sorted", raw.cores())]["sps"]
    assert report["kind"] == "transformer" and report["static"]["kind"] == "static"
    assert any("<- raw limit" in line for line in lines[:-1]), "a readable table precedes the JSON"


def test_raw_limit_measures_sorted_batches_of_32(tiny_static: Path) -> None:
    runtime = load_runtime(ModelConfig(name="s", path=str(tiny_static), kind="static"), tiny_static)
    calls: list[int] = []
    forward = runtime.forward
    runtime.forward = lambda batch: calls.append(len(batch)) or forward(batch)  # type: ignore[method-assign]
    corpus = sentences(200)
    assert raw.raw_limit(runtime, corpus, 1, seconds=0.05) > 0
    assert max(calls) == 32 and calls.count(32) >= len(calls) - 2  # the warm-up batch and a window's tail
