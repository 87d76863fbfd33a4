"""What the host offers against what a config needs: CPUs, GPUs, memory, ``/dev/shm``, model
directories. ``appliance check`` prints the report; ``appliance serve`` refuses to start on any
problem, before it spawns a worker."""

from __future__ import annotations

import os
import shutil

import psutil

from appliance.config import Config, resolve_model_path
from appliance.slots import discover_gpus, plan_slots

SEGMENT_HEADER_BYTES = 4096  # a channel's header and ring control lines, rounded up


def report(config: Config) -> list[str]:
    slots = plan_slots(config.workers, config.gateway_cores)
    return [
        f"cpus available: {sorted(os.sched_getaffinity(0))}",
        f"gpus: {discover_gpus() or 'none'}",
        f"memory available: {psutil.virtual_memory().available / 2**30:.1f} GiB",
        f"/dev/shm free: {shm_free() / 2**20:.0f} MiB, rings need {shm_needed(config, len(slots)) / 2**20:.0f} MiB",
        *(f"worker {s.index}: {s.role}, cores {list(s.cores)}, gpu {s.gpu}" for s in slots),
    ]


def problems(config: Config) -> list[str]:
    found = []
    needed = shm_needed(config, len(plan_slots(config.workers, config.gateway_cores)))
    if shm_free() < needed:
        found.append(f"/dev/shm has {shm_free() / 2**20:.0f} MiB free but the rings need "
                     f"{needed / 2**20:.0f} MiB (lower ring_bytes or workers, or enlarge /dev/shm)")  # fmt: skip
    found.extend(model_problems(config))
    return found


def model_problems(config: Config) -> list[str]:
    found = []
    for model in config.models:
        try:
            path = resolve_model_path(model.path, config.state_dir)
        except FileNotFoundError as exc:
            found.append(f"model {model.name!r}: {exc}")
            continue
        if not path.is_dir():
            hint = " (run `appliance models distill`, or `make serve` which does)" if model.kind == "static" else ""
            found.append(f"model {model.name!r}: directory {path} does not exist{hint}")
    return found


def shm_free() -> int:
    try:
        return shutil.disk_usage("/dev/shm").free
    except OSError:
        return 0


def shm_needed(config: Config, workers: int) -> int:
    return workers * (2 * config.ring_bytes + SEGMENT_HEADER_BYTES)
