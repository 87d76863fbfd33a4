"""The open loop's send times: Poisson arrivals at a fixed mean rate, drawn from a seed.

Gaps between arrivals are exponential with mean ``1 / rate``; the schedule is computed before the
run, so a slow server cannot slow the arrivals down (which is what a closed loop does, and how
coordinated omission hides queueing). Latency is measured from these scheduled times.
"""

from __future__ import annotations

import numpy as np


def poisson_schedule(rate: float, seconds: float, seed: int) -> list[float]:
    """Send offsets (seconds from the start, increasing, all below ``seconds``) at ``rate`` per second."""
    if rate <= 0 or seconds <= 0:
        raise ValueError(f"an open loop needs a positive rate and duration (rate {rate}, seconds {seconds})")
    rng = np.random.default_rng(seed)
    # draw in chunks of the expected count plus slack, until the window is covered
    offsets: list[float] = []
    now = 0.0
    chunk = int(rate * seconds + 10 * np.sqrt(rate * seconds) + 16)
    while now < seconds:
        for gap in rng.exponential(1.0 / rate, chunk):
            now += float(gap)
            if now >= seconds:
                break
            offsets.append(now)
    return offsets
