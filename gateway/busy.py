"""How busy a worker slot has been: the share of the last minute its model spent computing.

A worker reports ``compute_us``, the time its forward passes took since it started, in every
``Stats`` (about once a second). ``BusyWindow`` keeps, per slot, the step between consecutive
reports as one sample, ``(at, busy_us, span_s)``: the compute time that finished in the
``span_s`` seconds up to ``at``. ``share`` sums the samples inside the window, the oldest one
prorated by how much of its span falls inside, and divides by the window (or by the time since
the first report, while that is shorter), clamped to 0..1.

Across a respawn the counters start again from 0 under a new pid: the first report of a new pid
counts from 0, not from the old incarnation's total, and the time the slot had no worker counts
as idle. A slot that stops reporting (dead, silent) decays to 0 as its samples leave the window.
A batch longer than a report interval lands whole in the interval it finished in; the clamp and
the minute-long window absorb that.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable, NamedTuple

WINDOW_S = 60.0


class _Sample(NamedTuple):
    at: float  # when the report came (the clock's seconds)
    busy_us: int  # compute time finished since the previous report
    span_s: float  # seconds since the previous report


class BusyWindow:
    """One slot's recent compute time, fed by ``observe`` with every ``Stats`` it sends."""

    def __init__(self, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.clock = clock
        self.samples: deque[_Sample] = deque()
        self.started_at: float | None = None  # the first report ever, for a window not yet full
        self.last_at = 0.0
        self.last_pid = 0
        self.last_compute_us = 0

    def observe(self, pid: int, compute_us: int) -> None:
        now = self.clock()
        if self.started_at is None:  # the baseline: no span before it to attribute anything to
            self.started_at = now
        else:
            base = self.last_compute_us if pid == self.last_pid else 0  # a new incarnation counts from 0
            self.samples.append(_Sample(now, max(0, compute_us - base), now - self.last_at))
        self.last_at, self.last_pid, self.last_compute_us = now, pid, compute_us
        self.forget(now)

    def share(self) -> float:
        """Busy share of the last ``window_s`` seconds (of the time since the first report while
        shorter), 0 before two reports."""
        now = self.clock()
        self.forget(now)
        if self.started_at is None or now <= self.started_at:
            return 0.0
        start = max(now - self.window_s, self.started_at)
        busy_s = sum(self.inside(sample, start) for sample in self.samples) / 1e6
        return min(1.0, busy_s / (now - start))

    def inside(self, sample: _Sample, start: float) -> float:
        """The sample's compute microseconds, prorated when its span began before ``start``."""
        if sample.at - sample.span_s >= start or sample.span_s <= 0:
            return float(sample.busy_us)
        return sample.busy_us * max(0.0, sample.at - start) / sample.span_s

    def forget(self, now: float) -> None:
        while self.samples and self.samples[0].at <= now - self.window_s:
            self.samples.popleft()
