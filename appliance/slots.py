"""Device slots: which GPU and which CPU cores each worker owns, planned in the parent.

The composition root (``appliance/cli.py``) plans the slots (``plan_slots``) without touching CUDA or torch; each
worker then pins itself to its own slot (``workers.pinning``). The native thread pools' sizes are
the exception, set by the supervisor in the worker's environment at spawn (``thread_env``): a
worker loads numpy, whose OpenBLAS sizes its pool once as it loads, before it can pin itself.

Planning rules (``workers = "auto"``):

- **Gateway cores.** The first ``gateway_cores`` of the allowed CPUs are left to the gateway, but
  only on machines with at least ``GATEWAY_RESERVE_MIN_CPUS`` (4) CPUs, and never all of them. The
  gateway (one event loop, msgspec, memcpy into rings) needs little CPU; on a 2-core box keeping a
  whole core for it would halve the model's threads, so there the workers get every core and
  the gateway shares them.
- **GPUs.** One slot per GPU. Each slot gets the cores nearest its GPU (the PCI device's
  ``local_cpulist`` in sysfs) split among the slots on that NUMA node; when any GPU's locality is
  unknown, all cores are split evenly instead. Cores near no GPU stay with the gateway and the OS.
- **No GPU, fewer than 4 CPUs.** One single-threaded worker per core (measured faster on 2
  cores than one worker with two threads: see ``plan_slots``).
- **No GPU.** Slots of about ``CPU_SLOT_CORES`` (4) cores each (at least one slot): encoder
  forwards on short texts are small GEMMs whose speed-up flattens beyond a few threads, so more
  independent workers with few threads each get more throughput, and each tokenizes its own work.
  Cores are cut into contiguous runs, which keeps a slot on one socket on the usual numbering.
  "Cores" are the logical CPUs of the affinity mask; SMT siblings are not paired up, so with
  hyper-threading two slots may share physical cores (a simplification, not measured here).

An integer ``workers`` forces that many slots: GPUs are dealt round-robin (several workers may
share a GPU, overlapping one's tokenization with another's forward pass), cores are split as
evenly as possible, and slots share cores when there are more slots than cores.

Slot GPU numbers are what ``discover_gpus`` returns: CUDA ordinals, or the ordinals listed in an
inherited ``CUDA_VISIBLE_DEVICES``; when that variable names devices by UUID (``GPU-…``/``MIG-…``),
a slot's number is a position in that list and the child is given the UUID.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

from appliance.protocol import WorkerRole

log = logging.getLogger("appliance.slots")

GATEWAY_RESERVE_MIN_CPUS = 4
CPU_SLOT_CORES = 4
NVIDIA_SMI_TIMEOUT_S = 5.0
VISIBLE = "CUDA_VISIBLE_DEVICES"
PROC_GPUS = Path("/proc/driver/nvidia/gpus")
DEV = Path("/dev")
PCI_DEVICES = Path("/sys/bus/pci/devices")
# Native thread pools that size themselves from the environment when their library loads
# (OpenMP and MKL in torch, OpenBLAS in numpy).
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class Slot(NamedTuple):
    """One worker's share of the machine."""

    index: int
    role: WorkerRole  # "primary" (slot 0: every model) or "light" (the main model only)
    cores: tuple[int, ...]
    gpu: int | None


def thread_env(slot: Slot) -> dict[str, str]:
    """The environment that sizes a worker's native thread pools to its slot: one thread per
    core (one for a slot without cores). Given at spawn, so it holds before the worker's first
    import: its boot path loads numpy (``appliance.protocol``) before it pins itself."""
    return dict.fromkeys(THREAD_VARS, str(max(1, len(slot.cores))))


# ---- discovery (no CUDA, no torch) -----------------------------------------------------------
def discover_gpus(environ: Mapping[str, str] | None = None) -> list[int]:
    """GPU ordinals this process may use, found without initialising CUDA; [] when none."""
    environ = os.environ if environ is None else environ
    visible = environ.get(VISIBLE)
    if visible is not None:
        entries = visible_entries(visible)
        return list(range(len(entries))) if by_uuid(entries) else [int(e) for e in entries]
    count = _count_proc_gpus() or _count_dev_nodes() or _count_nvidia_smi()
    return list(range(count))


def visible_entries(value: str) -> list[str]:
    """The devices a CUDA_VISIBLE_DEVICES value names, in order ("" names none).

    CUDA ignores everything from the first invalid entry on; a negative ordinal is the usual
    way to hide every GPU ("-1").
    """
    entries: list[str] = []
    for raw in value.split(","):
        entry = raw.strip()
        if not entry or entry.startswith("-"):
            break
        entries.append(entry)
    return entries


def by_uuid(entries: Sequence[str]) -> bool:
    return any(not entry.isdigit() for entry in entries)


def _count_proc_gpus() -> int:
    try:
        return sum(1 for _ in PROC_GPUS.iterdir())
    except OSError:
        return 0


def _count_dev_nodes() -> int:
    try:
        return sum(1 for p in DEV.iterdir() if re.fullmatch(r"nvidia\d+", p.name))
    except OSError:
        return 0


def _count_nvidia_smi() -> int:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi -L failed (%s); assuming no GPU", exc)
        return 0
    return sum(1 for line in listing.stdout.splitlines() if line.startswith("GPU "))


def gpu_local_cpus(gpus: Sequence[int]) -> dict[int, tuple[int, ...]]:
    """The CPUs nearest each GPU, from sysfs; GPUs whose locality is unknown are left out.

    GPU ordinal i is taken to be the i-th NVIDIA PCI device in bus order (nvidia-smi's order, and
    CUDA's with CUDA_DEVICE_ORDER=PCI_BUS_ID). A best-effort hint: a wrong guess costs locality,
    never correctness. Devices named by UUID in CUDA_VISIBLE_DEVICES have no known bus here.
    """
    visible = os.environ.get(VISIBLE)
    if visible is not None and by_uuid(visible_entries(visible)):
        return {}
    try:
        buses = sorted(p.name for p in PROC_GPUS.iterdir())
    except OSError:
        return {}
    local: dict[int, tuple[int, ...]] = {}
    for gpu in gpus:
        if gpu < len(buses):
            try:
                text = (PCI_DEVICES / buses[gpu].lower() / "local_cpulist").read_text()
            except OSError:
                continue
            local[gpu] = parse_cpulist(text)
    return local


def parse_cpulist(text: str) -> tuple[int, ...]:
    """'0-3,8,10-11' -> (0, 1, 2, 3, 8, 10, 11)"""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        cpus.extend(range(int(first), int(last or first) + 1))
    return tuple(cpus)


# ---- planning --------------------------------------------------------------------------------
def plan_slots(
    workers: int | str,
    gateway_cores: int,
    *,
    cpus: Sequence[int] | None = None,
    gpus: Sequence[int] | None = None,
    gpu_cpus: Mapping[int, Sequence[int]] | None = None,
) -> list[Slot]:
    """The device slots for a worker count ("auto" or an integer); see the module docstring.

    ``cpus`` defaults to this process's allowed CPUs, ``gpus`` to ``discover_gpus()`` and
    ``gpu_cpus`` (each GPU's nearest CPUs) to what sysfs says.
    """
    cpus = sorted(os.sched_getaffinity(0)) if cpus is None else sorted(cpus)
    gpus = discover_gpus() if gpus is None else list(gpus)
    if not cpus:
        raise ValueError("no CPU to pin workers to")
    usable = worker_cores(cpus, gateway_cores)
    if workers == "auto" and not gpus and len(cpus) < GATEWAY_RESERVE_MIN_CPUS:
        # small machine: one single-threaded worker per core. Measured on 2 cores (bench serve,
        # MiniLM, 32 single-sentence clients): 0.67x the raw limit vs 0.48x for one 2-thread worker
        count = len(usable)
    else:
        count = slot_count(workers, len(usable), len(gpus))
    if not gpus:
        return [_slot(i, cores, None) for i, cores in enumerate(split_cores(usable, count))]
    slot_gpus = [gpus[i % len(gpus)] for i in range(count)]
    local = gpu_local_cpus(gpus) if gpu_cpus is None else gpu_cpus
    core_sets = cores_near_gpus(slot_gpus, usable, local)
    return [_slot(i, cores, gpu) for i, (cores, gpu) in enumerate(zip(core_sets, slot_gpus))]


def worker_cores(cpus: Sequence[int], gateway_cores: int) -> list[int]:
    """The CPUs left to workers once the gateway's are set aside (small machines keep them all)."""
    if len(cpus) < GATEWAY_RESERVE_MIN_CPUS:
        return list(cpus)
    reserve = min(max(0, gateway_cores), len(cpus) - 1)
    return list(cpus[reserve:])


def slot_count(workers: int | str, cores: int, gpus: int) -> int:
    if workers == "auto":
        if gpus:
            return gpus
        return max(1, (cores + CPU_SLOT_CORES // 2) // CPU_SLOT_CORES)  # nearest whole number of slots
    if isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1:
        return workers
    raise ValueError(f"workers must be 'auto' or an integer >= 1, got {workers!r}")


def split_cores(cores: Sequence[int], count: int) -> list[tuple[int, ...]]:
    """``count`` contiguous runs of sizes differing by at most one; shared round-robin if too few."""
    if count > len(cores):
        return [(cores[i % len(cores)],) for i in range(count)]
    size, extra = divmod(len(cores), count)
    runs: list[tuple[int, ...]] = []
    start = 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        runs.append(tuple(cores[start:end]))
        start = end
    return runs


def cores_near_gpus(slot_gpus: Sequence[int], usable: Sequence[int],
                    local: Mapping[int, Sequence[int]]) -> list[tuple[int, ...]]:  # fmt: skip
    """Each GPU slot's cores: its GPU's nearest usable cores, shared among the slots near them."""
    near = {gpu: _within(usable, local.get(gpu, ())) for gpu in set(slot_gpus)}
    if not all(near.values()):
        # Mixing the two rules could hand one GPU every core; an even split is the safe fallback.
        return split_cores(usable, len(slot_gpus))
    groups: dict[tuple[int, ...], list[int]] = {}  # node's cores -> slots on that node
    for i, gpu in enumerate(slot_gpus):
        groups.setdefault(near[gpu], []).append(i)
    core_sets: list[tuple[int, ...]] = [()] * len(slot_gpus)
    for cores, members in groups.items():
        for i, run in zip(members, split_cores(cores, len(members))):
            core_sets[i] = run
    return core_sets


def _within(cores: Sequence[int], allowed: Sequence[int]) -> tuple[int, ...]:
    allowed_set = set(allowed)
    return tuple(c for c in cores if c in allowed_set)


def _slot(index: int, cores: tuple[int, ...], gpu: int | None) -> Slot:
    return Slot(index, "primary" if index == 0 else "light", cores, gpu)
