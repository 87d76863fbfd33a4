"""Where the machine's CPU went during one load point: the load generator, the gateway, the workers.

On a small machine the client that drives the load, the gateway and the workers share the cores,
so what bounds served throughput against the model's raw limit is a question of who spent the
CPU. Two snapshots bound the point's measured window (the load's warm-up left out), each holding:

- the CPU seconds (user + system, from ``psutil``) of the load generator: the process the load
  runs in, which ``serve`` keeps in its own (``bench/loadgen`` drives it from there);
- the gateway's, and each worker's, keyed by pid and start time (none with ``--url``);
- the machine's: every CPU's busy and idle seconds (``psutil.cpu_times()``), summed.

Between them, per point: CPU microseconds per answered request of the client, the gateway and
the workers (together and each), and each one's share of the machine's cores over the window,
with ``other`` (busy, but none of them) and ``idle`` (idle and I/O wait). Shares are taken over
the machine's own count of CPU time in the window, so they sum to 1 but for the rounding of the
kernel's clock ticks between two reads.

A worker respawned mid-point is counted as far as it is known: one that vanished took its CPU
since the first snapshot with it (that time falls under ``other``); one started inside the window
counts in full. Both are flagged (``vanished``, ``appeared``), so such a point is not one to quote.

The snapshots are taken by a thread of this process at ``warmup`` and ``warmup + seconds`` after
the load starts (``Meter.window``), within a few milliseconds of the window the load measures;
the load ending early takes the second one then.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import psutil

from bench.launcher import Appliance
from bench.points import Point

JOIN_S = 30.0  # the snapshot thread's last read, after the load: /proc reads, never near this

Pids = Callable[[], Sequence[int]]  # the live worker pids now (``launcher.Appliance.worker_pids``)


@dataclass(frozen=True, slots=True)
class Processes:
    """Whose CPU a point is split between; ``gateway`` None and no workers with ``--url``."""

    client: psutil.Process
    gateway: psutil.Process | None = None
    workers: Pids = lambda: ()


def processes_of(started: Appliance | None) -> Processes:
    """This process as the client (``serve`` drives its load from it); the appliance this bench
    started, as the gateway, and its workers, when it started one."""
    if started is None:
        return Processes(psutil.Process())
    return Processes(psutil.Process(), psutil.Process(started.pid), started.worker_pids)


@dataclass(frozen=True, slots=True)
class Snapshot:
    at: float  # time.monotonic()
    client: float  # CPU seconds, user + system
    gateway: float | None  # None: no gateway here, or it could not be read
    workers: dict[tuple[int, float], float]  # (pid, start time) -> CPU seconds
    busy: float  # the machine's CPU seconds, every CPU, not idle
    idle: float  # idle and waiting for I/O
    clock: float = 0.0  # time.time() just before the worker reads: for a worker's start time


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def machine_seconds() -> tuple[float, float]:
    """(busy, idle) CPU seconds of the whole machine. Guest time is inside user and nice already;
    steal (a hypervisor's) counts as busy: those cores were not this machine's to use."""
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    return total - idle, idle


def worker_seconds(pids: Sequence[int]) -> dict[tuple[int, float], float]:
    found = {}
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            process = psutil.Process(pid)
            found[(pid, process.create_time())] = cpu_seconds(process)  # a gone pid is simply absent
    return found


def take(processes: Processes) -> Snapshot:
    gateway = None
    if processes.gateway is not None:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            gateway = cpu_seconds(processes.gateway)
    clock = time.time()
    workers = worker_seconds(processes.workers())
    busy, idle = machine_seconds()
    return Snapshot(time.monotonic(), cpu_seconds(processes.client), gateway, workers, busy, idle, clock)


@dataclass(frozen=True, slots=True)
class CpuSplit:
    """One point's CPU, per answered request and as shares of the machine's cores."""

    wall_s: float
    requests: int
    cores: int
    client_us: float  # per request
    gateway_us: float | None  # None: no gateway accounted (``--url``)
    worker_us: tuple[float, ...]  # per request, each worker by pid
    shares: dict[str, float]  # client, gateway, workers, other, idle: of the cores over the window
    vanished: int = 0  # workers gone inside the window
    appeared: int = 0  # workers started inside it

    @property
    def workers_us(self) -> float:
        return sum(self.worker_us)

    @property
    def accounted(self) -> bool:
        """The server's processes are in it (not ``--url``)."""
        return self.gateway_us is not None

    def figures(self) -> dict[str, object]:
        """The JSON of the point's split: ``_us`` per request, shares as fractions of the cores."""
        out: dict[str, object] = {"wall_s": round(self.wall_s, 3), "requests": self.requests, "cores": self.cores,
                                  "client_us": round(self.client_us, 1)}  # fmt: skip
        if self.accounted:
            out |= {"gateway_us": round(self.gateway_us or 0.0, 1), "workers_us": round(self.workers_us, 1),
                    "worker_us": [round(us, 1) for us in self.worker_us],
                    "vanished_workers": self.vanished, "appeared_workers": self.appeared}  # fmt: skip
        out["shares"] = {name: round(share, 4) for name, share in self.shares.items()}
        return out

    def line(self) -> str:
        """One line, under the point's row (as ``--batching`` prints its own)."""
        per = f"client {self.client_us:.0f}"
        if self.accounted:
            each = ", ".join(f"{us:.0f}" for us in self.worker_us)
            per += f", gateway {self.gateway_us:.0f}, workers {self.workers_us:.0f} ({each})"
        shares = ", ".join(f"{name} {share:.3f}" for name, share in self.shares.items())
        flags = f"; respawned: {self.vanished} worker(s) gone, {self.appeared} started inside (partly under other)" \
            if self.vanished or self.appeared else ""  # fmt: skip
        return f"  cpu: us per request: {per}; shares of {self.cores} cores: {shares}{flags}"


def between(before: Snapshot, after: Snapshot, requests: int, cores: int) -> CpuSplit:
    """The split of the window from ``before`` to ``after``, over ``requests`` answered in it."""
    client = after.client - before.client
    workers, vanished, appeared = worker_deltas(before, after)
    seconds = {"client": client}
    if before.gateway is not None:  # the server's processes are this bench's (not ``--url``)
        seconds |= {"gateway": (after.gateway or before.gateway) - before.gateway, "workers": sum(workers)}
    busy, idle = after.busy - before.busy, after.idle - before.idle
    # a process's ticks and the machine's are read moments apart: ``other`` never goes below 0
    seconds |= {"other": max(0.0, busy - sum(seconds.values())), "idle": idle}
    per = 1e6 / requests if requests else 0.0
    gateway_us = seconds["gateway"] * per if "gateway" in seconds else None
    return CpuSplit(after.at - before.at, requests, cores, client * per, gateway_us, tuple(w * per for w in workers),
                    {name: fraction(s, busy + idle) for name, s in seconds.items()}, vanished, appeared)  # fmt: skip


def worker_deltas(before: Snapshot, after: Snapshot) -> tuple[list[float], int, int]:
    """(CPU seconds of each worker known in the window, by pid; how many vanished; how many appeared)."""
    seconds = []
    for key in sorted(after.workers):
        if key in before.workers:
            seconds.append(after.workers[key] - before.workers[key])
        elif key[1] >= before.clock - 1.0:  # started inside the window (create_time is coarse)
            seconds.append(after.workers[key])
    appeared = sum(1 for key in after.workers if key not in before.workers)
    vanished = sum(1 for key in before.workers if key not in after.workers)
    return seconds, vanished, appeared


def fraction(part: float, whole: float) -> float:
    return part / whole if whole > 0 and math.isfinite(part) else 0.0


@dataclass
class Window:
    """The two snapshots around a load's measured window, taken by a thread while the load runs."""

    before: Snapshot | None = None
    after: Snapshot | None = None
    ended: threading.Event = field(default_factory=threading.Event)  # the load returned

    def run(self, processes: Processes, warmup: float, seconds: float) -> None:
        if self.ended.wait(warmup):
            return  # the load ended inside its warm-up (it failed): nothing measured
        self.before = take(processes)
        self.ended.wait(seconds)
        self.after = take(processes)


class Meter:
    """Splits each point's CPU between ``processes``; keeps every point's figures in ``records``."""

    def __init__(self, processes: Processes) -> None:
        self.processes = processes
        self.cores = psutil.cpu_count() or 1
        self.records: list[dict[str, object]] = []

    @contextlib.contextmanager
    def window(self, warmup: float, seconds: float) -> Iterator[Window]:
        """Wrap a load of ``warmup`` + ``seconds``; the window's snapshots are set on the way out."""
        window = Window()
        thread = threading.Thread(target=window.run, args=(self.processes, warmup, seconds), name="cpu-split",
                                  daemon=True)  # fmt: skip
        thread.start()
        try:
            yield window
        finally:
            window.ended.set()
            thread.join(JOIN_S)

    def split(self, window: Window, point: Point) -> CpuSplit:
        """The point's split (recorded under its scenario, batch and concurrency)."""
        if window.before is None or window.after is None:
            raise RuntimeError(f"{point.scenario}: the load ended before its measured window began")
        split = between(window.before, window.after, point.requests, self.cores)
        self.records.append({"scenario": point.scenario, "batch": point.batch, "concurrency": point.concurrency,
                             **split.figures()})  # fmt: skip
        return split
