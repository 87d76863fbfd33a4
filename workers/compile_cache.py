"""Compiled artefacts under ``state_dir``: what lets a respawned or restarted ``compile = true``
worker skip most of its compile.

torch.compile keeps three caches on disk, all in inductor's cache dir, which ``use`` points at
``<state_dir>/compile-cache`` before torch is imported (shared by every worker, kept across
respawns, restarts and reboots; inductor's default is a folder in /tmp):

    aotautograd/   the AOTAutograd cache: the traced forward graph, keyed by dynamo's graph
    fxgraph/       the FX graph cache: inductor's generated code for that graph
    xx/c<hash>.so  the C++ kernels that code calls, keyed by their source

With the first two hit, a start pays dynamo's trace of the module and loading the kernels, not
AOT tracing, inductor's passes and the C++ compiler. What kept a respawn from hitting them was
inductor *freezing* on CPU: it folds the weights into the graph and prepacks the linear weights
as mkldnn tensors, which cannot be pickled, so the FX graph cache bypasses every frozen graph
("mkldnn tensors unpickleable") and the AOTAutograd cache refuses freezing outright. The runtimes
therefore compile without freezing (``workers/runtimes/hf.py``); ``python -m bench restart``
measures both starts.

``torch.compiler.save_cache_artifacts`` / ``load_cache_artifacts`` (the "mega-cache") serialize
the same AOTAutograd and FX graph entries into one blob, to carry them to another cache dir or
machine; here the cache dir itself lives in ``state_dir``, so it would copy what is already there,
and a frozen graph is no more cacheable through it.

Stale artefacts cost nothing but a miss: every key includes torch's version, inductor's source
hash, its config and the graph, so another torch or a changed model simply compiles. Corrupt ones
(a crash mid-write, a full disk): torch reads an unreadable cache entry as a miss; anything that
still fails while compiling (say a truncated kernel library) is handled by ``compile_afresh``:
the shared cache dir is moved aside and removed, and the module compiled again from nothing in
a folder of this process's own, ``compile-cache.own-<pid>``, which it keeps using for the rest
of its life (later compiles of new shapes or other models included).

Why its own folder: workers start together, so several can fail on the same broken artefacts at
once. Had each retried in the shared folder, one worker's removal (another rename of
``compile-cache``) would pull the folder from under another's retry, which would then fail too
and cost that worker its start. Now a retry touches no folder another process uses; a removal
can only make another worker's *first* try fail, and that worker falls back to its own folder in
turn. The next start of any worker compiles into the shared folder again. Every folder moved
aside is renamed to a unique name first (one ``rename``: nobody sees it half removed), and
``use`` sweeps the own and aside folders of processes that are gone.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

log = logging.getLogger("appliance.worker")

CACHE_DIR = "compile-cache"  # under state_dir
# compile-cache.own-<pid>: one process's fallback; compile-cache.unusable-<pid>-<hex>: moved aside
LEFTOVER = re.compile(rf"^{re.escape(CACHE_DIR)}\.(?:own|unusable)-(\d+)(?:-[0-9a-f]+)?$")
T = TypeVar("T")


def use(state_dir: str) -> Path:
    """Point inductor's caches at ``<state_dir>/compile-cache``; call before torch is imported
    (inductor reads the switches then). Set, not defaulted: a parent that imported torch exports
    its own /tmp choice into our environment (inductor writes the folder it chose back into
    ``os.environ``)."""
    path = Path(os.path.abspath(os.path.join(state_dir, CACHE_DIR)))
    sweep(path.parent)
    point_at(path)
    os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"] = "1"
    os.environ["TORCHINDUCTOR_AUTOGRAD_CACHE"] = "1"
    return path


def point_at(path: Path) -> None:
    """inductor's cache dir from now on: it reads the variable on every use."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)


def sweep(state_dir: Path) -> None:
    """Remove the fallback and moved-aside folders of processes that are gone (a worker killed
    mid-removal, or one that fell back and has since exited)."""
    try:
        names = os.listdir(state_dir)
    except FileNotFoundError:
        return
    for name in names:
        match = LEFTOVER.match(name)
        if match and not alive(int(match.group(1))):
            shutil.rmtree(state_dir / name, ignore_errors=True)  # two sweepers at once: each skips what the other took


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    return True


@dataclass(frozen=True)
class CacheCounts:
    """torch's own cache counters (``torch._dynamo.utils.counters``), the proof of a reuse."""

    graph_hits: int = 0  # FX graph cache: inductor's generated code reused
    graph_misses: int = 0
    graph_bypasses: int = 0  # a graph the cache will not hold (a frozen one, say)
    aot_hits: int = 0  # AOTAutograd cache: the traced forward graph reused
    aot_misses: int = 0
    aot_bypasses: int = 0

    def __sub__(self, other: CacheCounts) -> CacheCounts:
        return CacheCounts(*(a - b for a, b in zip(self.values(), other.values())))

    def values(self) -> tuple[int, ...]:
        return (self.graph_hits, self.graph_misses, self.graph_bypasses, self.aot_hits, self.aot_misses,
                self.aot_bypasses)  # fmt: skip

    def describe(self) -> str:
        return (f"fx graph cache {self.graph_hits} hit, {self.graph_misses} miss, {self.graph_bypasses} bypass; "
                f"autograd cache {self.aot_hits} hit, {self.aot_misses} miss, {self.aot_bypasses} bypass")  # fmt: skip


def counts() -> CacheCounts:
    from torch._dynamo.utils import counters

    inductor, aot = counters["inductor"], counters["aot_autograd"]
    return CacheCounts(inductor["fxgraph_cache_hit"], inductor["fxgraph_cache_miss"],
                       inductor["fxgraph_cache_bypass"], aot["autograd_cache_hit"], aot["autograd_cache_miss"],
                       aot["autograd_cache_bypass"])  # fmt: skip


def compile_afresh(compile_and_run: Callable[[], T], name: str) -> T:
    """``compile_and_run()`` (its first call compiles), reusing whatever the cache holds; if that
    fails, once more in this process's own empty folder, with the shared one removed, so unusable
    artefacts cost a compile, not the worker. A failure the second time is the model's own and
    propagates (a load error)."""
    before = counts()
    try:
        result = compile_and_run()
    except Exception as exc:  # any failure reading or loading artefacts: torch raises many kinds
        failed_in = cache_dir()  # the shared folder, or this process's own after an earlier fallback
        own = own_dir(failed_in.parent)
        log.warning("model %r: compiling with the artefacts in %s failed (%s); removing them and compiling afresh "
                    "in %s", name, failed_in, exc, own)  # fmt: skip
        discard(failed_in)
        discard(own)  # leftovers of a dead process that had our pid
        point_at(own)  # order matters: before the retry, which must touch no folder another worker uses
        reset_compiler()
        result = compile_and_run()
    log.info("model %r compiled: %s", name, (counts() - before).describe())
    return result


def cache_dir() -> Path:
    from torch._inductor.runtime.runtime_utils import cache_dir as inductor_cache_dir

    return Path(inductor_cache_dir())


def own_dir(state_dir: Path) -> Path:
    """This process's fallback folder, beside the shared one."""
    return state_dir / f"{CACHE_DIR}.own-{os.getpid()}"


def discard(path: Path) -> None:
    """Move the folder aside under a name no other removal uses (one rename: another worker
    never sees it half removed, and two removals never take the same folder), then remove it. A
    worker still using its kernels keeps them: they are mapped, not reopened."""
    aside = path.with_name(f"{CACHE_DIR}.unusable-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        path.rename(aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def reset_compiler() -> None:
    """Forget what this process compiled or loaded, so the next call compiles from nothing."""
    import torch

    torch._dynamo.reset()
