"""Pinning a worker to its device slot, from inside the worker.

Each worker applies its own slot (planned by ``appliance.slots``) as the first thing it does:
``apply_in_child`` sets ``CUDA_VISIBLE_DEVICES``, the native thread-pool sizes and the CPU
affinity before torch is imported, because CUDA and OpenMP read them once, when they start;
``apply_torch_threads`` then sizes torch's own pools once torch is imported.

``TorchThreads`` widens torch's intra-op pool onto cores the gateway lends for one forward pass
(idle workers' cores, ``gateway/lending.py``) and narrows it back after. The affinity matters as
much as the count: the worker pinned its main thread before torch started, and every thread
created since inherits that mask, OpenMP's pool included, so more threads alone would share the
worker's own cores. The main thread's mask is widened for the pass, so a pool thread created in it
may run on a lent core, and narrowed back after it. Pool threads keep their wide mask; OpenMP
keeps them for the next wide pass (measured: the pool's threads outlive a narrowing). A widen and
restore costs about 10 us (two ``sched_setaffinity`` calls; ``set_num_threads`` 0.2 us) against
a 7-10 ms forward.

Two things make the wide pass pay, both set before torch starts. OpenMP's threads must stay
awake between the forward's parallel regions: a worker that may borrow (``borrows``) spins for
``SPIN_ON_LENT_CORES`` at a barrier before it sleeps (``GOMP_SPINCOUNT``), where passive waiting
(every other worker: a spinning thread burns a core that another process wants) woke a sleeping
thread at every region, which cost what the second core saved. And libgomp must count every core
the process may use, which it does once, when it loads: ``start_openmp_unpinned`` loads it before
the pin (``docs/architecture.md``, "Lent cores").
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import logging
import os
import sys
from contextlib import contextmanager
from typing import Iterator, Sequence

from appliance.slots import THREAD_VARS, VISIBLE, Slot, by_uuid, discover_gpus, thread_env, visible_entries

log = logging.getLogger("appliance.pinning")

# libgomp's barrier spin (iterations, ~100,000 a millisecond by its own estimate) in a worker that
# may compute on lent cores; a worker that computes only on its own cores keeps passive waiting.
SPIN_ON_LENT_CORES = 100_000

__all__ = ["SPIN_ON_LENT_CORES", "THREAD_VARS", "TorchThreads", "apply_in_child", "apply_torch_threads",
           "gpu_device_name", "start_openmp_unpinned"]


def apply_in_child(slot: Slot, *, borrows: bool = False) -> None:
    """Pin this process to its slot. Must run before torch is imported (CUDA and OpenMP read the
    environment once, when they start). ``borrows``: the gateway may lend this worker idle cores
    for a pass (``lend_idle_cores``), so its OpenMP threads spin briefly at barriers."""
    _refuse_after_cuda()
    _set_visible_gpu(slot)
    # the spawner set these already (numpy loads before this runs); set again for a worker
    # started some other way, and for torch, whose pools size themselves from them
    os.environ.update(thread_env(slot))
    # OpenMP threads spin at every barrier by default. When the gateway or another worker takes a
    # core for a moment, the spinning siblings burn it too: measured here with MiniLM, 2 threads,
    # a busy 2-core box: 194-236 ms per single-sentence forward spinning vs 31 ms passive.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if borrows:
        # Passive threads sleep at every barrier, and waking one at each of a forward's parallel
        # regions cost what a lent core saves. A short spin keeps the lent thread awake between
        # regions and lets it sleep soon after the pass: SPIN_ON_LENT_CORES is about 1 ms of
        # spinning by libgomp's own estimate (measured below, ``bench lone --as-worker``).
        os.environ.setdefault("GOMP_SPINCOUNT", str(SPIN_ON_LENT_CORES))
    start_openmp_unpinned()
    if slot.cores and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, slot.cores)
        except OSError as exc:
            allowed = sorted(os.sched_getaffinity(0))
            raise OSError(f"cannot pin worker {slot.index} to cores {list(slot.cores)} "
                          f"(this process may use {allowed}): {exc}") from exc  # fmt: skip


def start_openmp_unpinned() -> None:
    """Load torch's OpenMP runtime before the process narrows its mask.

    libgomp counts the cores the process may use once, when it loads, and from then on treats a
    team larger than that count as oversubscribed: its threads wait at barriers without spinning
    whatever ``GOMP_SPINCOUNT`` says. Loaded after pinning to one core, a pass widened onto lent
    cores is such a team, and waking its sleeping thread at every parallel region cost more than
    the second core saved (measured: 1.09-1.19x one thread's time for a MiniLM sentence; loaded
    first, 0.75x). torch's own import later binds to this copy (same soname).
    """
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return
    for location in spec.submodule_search_locations:
        for path in sorted(glob.glob(os.path.join(location, "lib", "libgomp*.so*"))):
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError as exc:
                log.debug("OpenMP runtime %s not preloaded: %s", path, exc)
            return


def _set_visible_gpu(slot: Slot) -> None:
    inherited = os.environ.get(VISIBLE)
    if slot.gpu is not None:
        os.environ[VISIBLE] = gpu_device_name(slot.gpu, inherited)
    elif discover_gpus():
        # A CPU worker on a GPU machine must not grab (and allocate a context on) a GPU. Where
        # there is none, the operator's environment is left as it was.
        os.environ[VISIBLE] = ""


def gpu_device_name(gpu: int, inherited: str | None) -> str:
    """The CUDA_VISIBLE_DEVICES value that shows a child only slot GPU ``gpu``."""
    entries = visible_entries(inherited) if inherited is not None else []
    if not by_uuid(entries):
        return str(gpu)
    if not 0 <= gpu < len(entries):
        raise ValueError(f"GPU {gpu} is not among the {len(entries)} in {VISIBLE}={inherited!r}")
    return entries[gpu]


def _refuse_after_cuda() -> None:
    torch = sys.modules.get("torch")
    if torch is None:
        return
    if torch.cuda.is_initialized():
        raise RuntimeError("CUDA is already initialised in this process: CUDA_VISIBLE_DEVICES would be "
                           "ignored; pin the worker before anything touches torch.cuda")  # fmt: skip
    log.warning("torch was imported before the worker was pinned; its OpenMP pool may ignore the slot")


def apply_torch_threads(slot: Slot) -> None:
    """Size torch's pools to the slot, once torch is imported."""
    import torch

    torch.set_num_threads(max(1, len(slot.cores)))
    # An encoder forward has no inter-op parallelism worth a pool; more threads would only
    # compete for the slot's cores. Torch allows setting this once, before any inter-op work.
    if torch.get_num_interop_threads() != 1:
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError as exc:
            log.debug("inter-op threads stay at %d: %s", torch.get_num_interop_threads(), exc)


class TorchThreads:
    """The worker's torch intra-op threads: one per own core, widened onto lent cores for a pass."""

    def __init__(self, own: Sequence[int]) -> None:
        self.own = tuple(sorted(own))
        self.threads = max(1, len(self.own))
        self._refused = False  # the lent cores were outside what this process may use: logged once

    @contextmanager
    def widened(self, spare: Sequence[int]) -> Iterator[bool]:
        """Run the body on the own cores plus ``spare``, one thread per core; yields whether it
        widened (False: nothing to add, the worker has no cores of its own, or the kernel refused)."""
        cores = self._widen(spare)
        if cores <= self.threads:
            yield False
            return
        import torch

        torch.set_num_threads(cores)
        try:
            yield True
        finally:
            # order matters: fewer threads first, so no pass ever has more threads than cores
            torch.set_num_threads(self.threads)
            os.sched_setaffinity(0, self.own)

    def _widen(self, spare: Sequence[int]) -> int:
        """Widen the main thread's mask; the cores it now may use (the own count when unchanged)."""
        wanted = set(self.own).union(spare)
        if not self.own or len(wanted) <= self.threads:
            return self.threads
        try:
            os.sched_setaffinity(0, wanted)
        except OSError as exc:  # every lent core is outside this process's cpuset
            if not self._refused:
                log.warning("cannot run on lent cores %s: %s; computing on the own cores", sorted(spare), exc)
                self._refused = True
            return self.threads
        # a cpuset may allow only some of them: the kernel keeps those, so count what it kept
        return len(os.sched_getaffinity(0))

    def count(self) -> int:
        """torch's intra-op threads now."""
        import torch

        return int(torch.get_num_threads())
