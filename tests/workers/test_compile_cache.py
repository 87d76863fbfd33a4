"""workers/compile_cache.py: the cache switches, torch's counters as read, and the fallback that
compiles afresh when the artefacts cannot be used (the real compiles are in
``test_worker_process.py``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workers import compile_cache
from workers.compile_cache import CacheCounts


def test_use_points_inductor_at_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/tmp/torchinductor_someone")  # a parent's choice
    path = compile_cache.use(str(tmp_path))
    assert path == tmp_path / "compile-cache" and os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(path)
    assert os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"] == os.environ["TORCHINDUCTOR_AUTOGRAD_CACHE"] == "1"


def test_counts_are_torchs_counters_and_subtract() -> None:
    from torch._dynamo.utils import counters

    before = compile_cache.counts()
    counters["inductor"]["fxgraph_cache_hit"] += 2
    counters["aot_autograd"]["autograd_cache_bypass"] += 1
    delta = compile_cache.counts() - before
    assert delta == CacheCounts(graph_hits=2, aot_bypasses=1)
    assert delta.describe() == "fx graph cache 2 hit, 0 miss, 0 bypass; autograd cache 0 hit, 0 miss, 1 bypass"


def test_unusable_artefacts_are_removed_and_compiled_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "compile-cache"
    (cache / "fxgraph").mkdir(parents=True)
    (cache / "fxgraph" / "entry").write_bytes(b"\x00corrupt")
    monkeypatch.setattr(compile_cache, "cache_dir", lambda: cache)
    calls: list[bool] = []

    def compile_and_run() -> str:
        calls.append(cache.exists())
        if len(calls) == 1:
            raise OSError("invalid ELF header")  # what loading a kernel library cut short raises
        return "compiled"

    assert compile_cache.compile_afresh(compile_and_run, "tiny") == "compiled"
    assert calls == [True, False]  # the second try found no cache dir: it compiled from nothing
    assert list(tmp_path.iterdir()) == []  # nothing left aside either


def test_a_failure_with_no_cache_to_blame_is_the_models_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compile_cache, "cache_dir", lambda: tmp_path / "compile-cache")

    def broken() -> None:
        raise RuntimeError("the model cannot be compiled")

    with pytest.raises(RuntimeError, match="cannot be compiled"):
        compile_cache.compile_afresh(broken, "tiny")
