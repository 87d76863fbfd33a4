"""`python -m bench at-rest`: what an appliance costs the machine while nobody sends it anything.

An on-prem box runs the appliance all day and serves it a fraction of the time, so its cost at
rest matters: the CPU its processes burn and how often they wake (each wake-up takes a core out
of its idle state, and on a virtual machine costs the host an exit too). The scenario starts the
appliance on the static model (what it loads does not change how it idles), waits ``--settle``
seconds once every worker is up, then reads each process's CPU time (user + system) and its
context switches (voluntary + involuntary, one per sleep that ended) over ``--seconds`` of no
traffic. ``--against DIR`` measures other checkouts in the same run, the systems taking turns
over ``--rounds``; the figures are the medians over the rounds. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import psutil

from appliance.config import STATIC_MODEL_NAME
from bench.cpu_split import cpu_seconds
from bench.gateway_cpu import HERE, rotated, static_model_path
from bench.launcher import running


@dataclass(frozen=True, slots=True)
class Sample:
    system: str
    gateway_cpu_ms: float  # CPU ms per second at rest
    gateway_wakes: float  # context switches per second
    workers_cpu_ms: float  # all workers together
    workers_wakes: float


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench at-rest", description=__doc__.splitlines()[0])
    p.add_argument("--model-path", default=None,
                   help="static model directory (default: the distilled minilm-static under .state)")  # fmt: skip
    p.add_argument("--workers", default="2")
    p.add_argument("--settle", type=float, default=3.0, help="seconds at rest before measuring")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--against", action="append", default=[],
                   help="another checkout of the appliance to measure in the same run (repeatable)")  # fmt: skip
    return p.parse_args(argv)


def reading(processes: list[psutil.Process]) -> list[tuple[float, int]]:
    """(CPU seconds, context switches) of each process now."""
    out = []
    for process in processes:
        switches = process.num_ctx_switches()
        out.append((cpu_seconds(process), switches.voluntary + switches.involuntary))
    return out


def measure(system: str, source: Path, args: argparse.Namespace, model: Path) -> Sample:
    models = [{"name": STATIC_MODEL_NAME, "path": str(model), "kind": "static", "main": True}]
    with tempfile.TemporaryDirectory(prefix="bench-at-rest-") as tmp, \
            running(models, workdir=Path(tmp), workers=args.workers, cwd=source) as started:  # fmt: skip
        processes = [psutil.Process(started.pid), *(psutil.Process(pid) for pid in started.worker_pids())]
        time.sleep(args.settle)
        before, start = reading(processes), time.monotonic()
        time.sleep(args.seconds)
        after, elapsed = reading(processes), time.monotonic() - start
    rates = [((a[0] - b[0]) * 1000 / elapsed, (a[1] - b[1]) / elapsed) for a, b in zip(after, before)]
    (gateway_ms, gateway_wakes), workers = rates[0], rates[1:]
    return Sample(system, gateway_ms, gateway_wakes, sum(w[0] for w in workers), sum(w[1] for w in workers))


def summary(samples: list[Sample]) -> dict[str, dict[str, float]]:
    """Per system, the median of each figure over the rounds."""
    out: dict[str, dict[str, float]] = {}
    for system in dict.fromkeys(s.system for s in samples):
        mine = [s for s in samples if s.system == system]
        out[system] = {name: round(statistics.median(getattr(s, name) for s in mine), 1)
                       for name in ("gateway_cpu_ms", "gateway_wakes", "workers_cpu_ms", "workers_wakes")}  # fmt: skip
    return out


def show(round_: int, s: Sample) -> Sample:
    print(f"round {round_ + 1} {s.system}: gateway {s.gateway_cpu_ms:.1f} CPU ms/s, {s.gateway_wakes:.0f} wakes/s; "
          f"workers {s.workers_cpu_ms:.1f} CPU ms/s, {s.workers_wakes:.0f} wakes/s", flush=True)  # fmt: skip
    return s


def print_table(figures: dict[str, dict[str, float]]) -> None:
    print(f"{'system':<28}{'gateway ms/s':>14}{'wakes/s':>9}{'workers ms/s':>14}{'wakes/s':>9}{'CPU vs first':>14}")
    first = next(iter(figures.values()))
    base = first["gateway_cpu_ms"] + first["workers_cpu_ms"]
    for system, f in figures.items():
        total = f["gateway_cpu_ms"] + f["workers_cpu_ms"]
        ratio = f"{total / base:.2f}x" if base else "-"
        print(f"{system:<28}{f['gateway_cpu_ms']:>14.1f}{f['gateway_wakes']:>9.0f}{f['workers_cpu_ms']:>14.1f}"
              f"{f['workers_wakes']:>9.0f}{ratio:>14}")  # fmt: skip


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    model = static_model_path(args)
    systems = {"this checkout": HERE, **{str(Path(d)): Path(d).resolve() for d in args.against}}
    samples = [show(round_, measure(system, source, args, model))
               for round_ in range(args.rounds) for system, source in rotated(list(systems.items()), round_)]  # fmt: skip
    figures = summary(samples)
    print_table(figures)
    print(json.dumps({"scenario": "at-rest", "seconds": args.seconds, "rounds": args.rounds, "systems": figures}))
    return 0
