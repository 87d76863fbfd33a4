"""workers/compile_cache.py: the cache switches, torch's counters as read, the fallback that
compiles afresh when the artefacts cannot be used, two real processes falling back at once on one
state dir, and the sweep of what gone processes left (the real compiles are in
``test_worker_process.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from workers import compile_cache
from workers.compile_cache import CACHE_DIR, CacheCounts

CHILD = Path(__file__).with_name("_compile_fallback_child.py")
CHILD_TIMEOUT_S = 240  # each child imports torch (seconds on a busy box) and waits for the other


@pytest.fixture(autouse=True)
def inductor_dir_restored(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``use`` and a fallback point inductor somewhere else: the test process gets its own back."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", os.environ.get("TORCHINDUCTOR_CACHE_DIR", "/tmp/unused"))
    yield


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
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / f"{CACHE_DIR}.own-{os.getpid()}")


def test_a_failure_with_no_cache_to_blame_is_the_models_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compile_cache, "cache_dir", lambda: tmp_path / "compile-cache")

    def broken() -> None:
        raise RuntimeError("the model cannot be compiled")

    with pytest.raises(RuntimeError, match="cannot be compiled"):
        compile_cache.compile_afresh(broken, "tiny")


def test_two_workers_falling_back_at_once_both_compile(tmp_path: Path) -> None:
    """The first child's retry has built its kernel when the second child fails and removes the
    cache; the first then loads its kernel. Both must succeed, each retry in a folder of its own."""
    state, meeting = tmp_path / "state", tmp_path / "meeting"
    state.mkdir(), meeting.mkdir()
    broken = state / CACHE_DIR / "fxgraph"
    broken.mkdir(parents=True)
    (broken / "entry").write_bytes(b"\x00corrupt")
    children = {role: subprocess.Popen([sys.executable, str(CHILD), str(state), str(meeting), role], text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                for role in ("first", "second")}  # fmt: skip
    try:
        reports = {role: finish(child) for role, child in children.items()}
    finally:
        for child in children.values():
            if child.poll() is None:
                child.kill()
            child.communicate()
    assert reports["first"]["result"] == "first" and reports["second"]["result"] == "second"
    retries = {Path(report["tries"][1]) for report in reports.values()}
    assert len(retries) == 2 and state / CACHE_DIR not in retries
    assert all(path.parent == state and path.name.startswith(f"{CACHE_DIR}.own-") for path in retries)
    compile_cache.sweep(state)  # both children are gone: their folders go
    assert [p.name for p in state.iterdir() if p.name.startswith(CACHE_DIR)] in ([], [CACHE_DIR])


def finish(child: subprocess.Popen[str]) -> dict[str, object]:
    try:
        out, err = child.communicate(timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"a fallback child did not finish within {CHILD_TIMEOUT_S}s")  # the caller kills it
    assert child.returncode == 0, err[-3000:]
    return dict(json.loads(out))


def test_use_sweeps_what_gone_processes_left(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True, timeout=60).stdout.strip()  # fmt: skip
    names = [CACHE_DIR, f"{CACHE_DIR}.own-{gone}", f"{CACHE_DIR}.unusable-{gone}-0a1b2c3d",
             f"{CACHE_DIR}.own-{os.getpid()}", f"{CACHE_DIR}.unusable-{os.getpid()}-00ff00ff", "jobs.sqlite"]  # fmt: skip
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "kernel.so").write_bytes(b"\x7fELF")
    compile_cache.use(str(tmp_path))
    kept = {CACHE_DIR, f"{CACHE_DIR}.own-{os.getpid()}", f"{CACHE_DIR}.unusable-{os.getpid()}-00ff00ff", "jobs.sqlite"}
    assert {p.name for p in tmp_path.iterdir()} == kept
