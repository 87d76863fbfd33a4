"""Memory guards (psutil): shed load before the machine runs out of memory, recycle bloated workers.

- ``MemoryGuard`` samples the system's available memory every ``interval`` seconds on the event
  loop (a psutil call costs ~20 us: far too much per request, nothing per quarter second). While
  it is below ``memory_floor`` the gateway refuses new work with 503 + Retry-After; work already
  accepted goes on, since finishing it is what frees memory.
- ``recycle_reason`` says whether a worker should be replaced: its RSS (from its own ``Stats``)
  above ``worker_rss_limit``, or its batch count past ``worker_max_batches``. The supervisor
  (``Supervisor.recycle_bloated``) recycles one worker at a time, only while every slot is up,
  and the only holder of a model (a single worker, or the primary for its extra models) only
  while the gateway has no work outstanding on it: requests for that model then wait for the
  respawn instead of failing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

import psutil

from appliance.config import Config
from appliance.protocol import Stats

log = logging.getLogger("appliance.guards")

SAMPLE_INTERVAL_S = 0.25
RETRY_AFTER_S = 2.0


def available_memory() -> int:
    return int(psutil.virtual_memory().available)


def total_memory() -> int:
    """The machine's memory, for the operator's views (``GET /stats``, ``/metrics``)."""
    return int(psutil.virtual_memory().total)


class MemoryGuard:
    """``low`` is True while available system memory is under ``floor`` bytes (0 = never)."""

    def __init__(self, floor: int, interval: float = SAMPLE_INTERVAL_S,
                 probe: Callable[[], int] = available_memory) -> None:  # fmt: skip
        self.floor = floor
        self.interval = interval
        self.probe = probe
        self.available = probe()
        self.low = False
        self.refusals = 0
        self._task: asyncio.Task[None] | None = None
        self.sample()

    def sample(self) -> None:
        self.available = self.probe()
        low = self.floor > 0 and self.available < self.floor
        if low != self.low:
            log.warning("available memory %.0f MiB is %s the floor of %.0f MiB: %s new work",
                        self.available / 2**20, "below" if low else "back above", self.floor / 2**20,
                        "refusing" if low else "accepting",
                        extra={"event": "memory_guard_trip" if low else "memory_guard_recovered",
                               "available_bytes": self.available, "floor_bytes": self.floor})  # fmt: skip
        self.low = low

    def start(self) -> None:
        if self.floor > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.sample()

    def message(self) -> str:
        return (f"available memory {self.available / 2**20:.0f} MiB is below the floor of "
                f"{self.floor / 2**20:.0f} MiB (memory_floor); retry shortly")  # fmt: skip


def recycle_reason(config: Config, stats: Stats) -> str | None:
    """Why this worker should be replaced now, or None."""
    counters = stats.counters
    if config.worker_rss_limit and counters.rss_bytes > config.worker_rss_limit:
        return (f"RSS {counters.rss_bytes / 2**20:.0f} MiB is over worker_rss_limit "
                f"{config.worker_rss_limit / 2**20:.0f} MiB")  # fmt: skip
    if config.worker_max_batches and counters.batches >= config.worker_max_batches:
        return f"{counters.batches} batches reached worker_max_batches {config.worker_max_batches}"
    return None
