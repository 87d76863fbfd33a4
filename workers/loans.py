"""Whether a worker takes the cores the gateway lends it: only while its widened passes run
uncontended.

The gateway lends idle workers' cores (``gateway/lending.py``) from what it books: its own workers'
parts. It cannot see the rest of the machine, and a lent core that something else wants is worse
than no loan: the pass's OpenMP threads meet at a barrier after every parallel region, so each
region waits for the thread that shares its core. Measured on the 2-core dev box with MiniLM
(``python -m bench lone --busy 1``, a process spinning on the other core): a two-thread pass whose
threads spin between regions took 3.5x the one-thread pass, and served latency at 25 requests/s
went from 26 to 270 ms at the 95th percentile while tests ran on the box.

A healthy widened pass keeps every thread on a CPU: computing, or spinning at a barrier
(``workers/pinning.py``, ``SPIN_ON_LENT_CORES``), so the process's CPU time over the pass is
about its thread count times the wall time. A thread that waits for a busy core spins out its
count and sleeps, and the share drops. So the worker times each widened pass both ways and, when
the share falls under ``CONTENDED_SHARE``, computes the loans it is given on its own cores for a
while (``backoff``: 1 s, doubling at each contended probe up to a minute, back to 1 s after an
uncontended one). Under load from outside the appliance that costs one slow pass per backoff.
"""

from __future__ import annotations

import time
from typing import Callable

# A widened pass whose process CPU time is under this share of (threads x wall time) had a thread
# waiting for a core. Measured (MiniLM bf16, one sentence, two threads, quiet 2-core box): healthy
# passes 1.01 at the median and 0.79 at the 1st percentile; with a process spinning on the lent
# core, 0.53 at the median. A false alarm costs a backoff of lent passes, not a slow one.
CONTENDED_SHARE = 0.6
MIN_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0

__all__ = ["CONTENDED_SHARE", "LoanGuard", "MAX_BACKOFF_S", "MIN_BACKOFF_S"]


class LoanGuard:
    """Decides, pass by pass, whether lent cores are used (``allows``), from how the last widened
    passes ran (``record``)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.backoff = MIN_BACKOFF_S
        self.until = 0.0  # loans are computed on the own cores until then
        self.contended = 0  # widened passes found contended
        self.declined = 0  # loans computed on the own cores while backing off

    def allows(self) -> bool:
        """Whether a pass may widen now; counts a declined loan when not."""
        if self.clock() >= self.until:
            return True
        self.declined += 1
        return False

    def record(self, threads: int, wall_s: float, cpu_s: float) -> bool:
        """Note a widened pass of ``threads`` threads that took ``wall_s`` and used ``cpu_s`` of the
        process's CPU time; whether it ran contended (and the loans now back off)."""
        if threads < 2 or wall_s <= 0:
            return False
        if cpu_s >= CONTENDED_SHARE * threads * wall_s:
            self.backoff = MIN_BACKOFF_S
            return False
        self.contended += 1
        self.until = self.clock() + self.backoff
        self.backoff = min(2 * self.backoff, MAX_BACKOFF_S)
        return True
