"""The machine a run measured and the software it ran: recorded beside every figure, because a
figure without them cannot be compared with anything."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

# SIMD and matrix extensions that change a CPU forward pass's speed; the rest of /proc/cpuinfo's
# flags are noise in a report
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni",
             "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "bf16", "i8mm")  # fmt: skip
PACKAGES = ("inference-appliance", "torch", "transformers", "tokenizers", "numpy", "aiohttp", "msgspec", "orjson",
            "uvloop", "matplotlib")  # fmt: skip
ROOT = Path(__file__).resolve().parents[2]


def machine() -> dict[str, Any]:
    info = cpuinfo()
    return {"cpu_model": info.get("model name") or platform.processor() or platform.machine(),
            "architecture": platform.machine(), "cores": os.cpu_count(),
            "cores_allowed": len(os.sched_getaffinity(0)),
            "cpu_flags": sorted(set((info.get("flags") or info.get("Features") or "").split()) & set(CPU_FLAGS)),
            "gpus": gpus(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "load_average": [round(v, 2) for v in os.getloadavg()], "os": platform.platform()}  # fmt: skip


def cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def gpus() -> list[str]:
    """``name, memory`` of each NVIDIA GPU nvidia-smi lists; none without the tool."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    found["commit"] = commit()
    return found


def commit() -> str:
    """The checkout's commit, with ``+changes`` when its tree differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+changes" if dirty else "")
