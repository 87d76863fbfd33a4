"""`python -m bench lone`: should a lone request use every core? One-sentence forward latency on
one torch thread, on all, and switching to all for the pass and back to one after it.

A worker is pinned to one core with one torch thread; at concurrency 1 the other cores idle
while it computes. Three modes, interleaved forward by forward over the same sentences so each
sees the same noise: ``one`` (1 thread), ``all`` (every core this process may use) and
``switch`` (``torch.set_num_threads(all)`` before the pass, ``1`` after: what a worker would do
for a lone request, so the switch's own cost is in it). With ``--busy N``, N processes spin on
the other cores meanwhile (a gateway, a load generator or another worker using them). Figures:
median and p90 per mode, ``all``'s and ``switch``'s median over ``one``'s, and ``all``'s CPU share (the
process's CPU time over threads x wall time, 1st percentile and median: the contention signal
``workers/loans.py`` reads; under ``--busy`` it shows what a contended pass reads).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import time
from typing import Callable, Sequence

from bench.corpus import sentences
from bench.split import load
from workers.runtimes import Tokenized

MODES = ("one", "all", "switch")


def parse(argv: Sequence[str]) -> argparse.Namespace:
    from bench.target import MODEL_PATH

    p = argparse.ArgumentParser(prog="python -m bench lone", description=__doc__.splitlines()[0])
    p.add_argument("--model-path", default=MODEL_PATH, help="the model's directory or package: ref")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    p.add_argument("--forwards", type=int, default=300, help="forwards per mode")
    p.add_argument("--busy", type=int, default=0, help="processes spinning on the other cores meanwhile")
    return p.parse_args(list(argv))


def spin(stop: "multiprocessing.synchronize.Event") -> None:  # type: ignore[name-defined]
    while not stop.is_set():
        sum(range(10_000))


def timed(run: Callable[[], object], shares: list[float] | None = None, threads: int = 1) -> float:
    """``run``'s wall time in ms; with ``shares``, also appends the process's CPU time over
    ``threads`` x that wall time (what ``workers/loans.py`` reads as contention)."""
    started, cpu = time.perf_counter(), time.process_time()
    run()
    wall = time.perf_counter() - started
    if shares is not None and wall > 0:
        shares.append((time.process_time() - cpu) / (threads * wall))
    return wall * 1000


def main(argv: Sequence[str]) -> int:
    import torch

    args = parse(argv)
    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(1)
    runtime = load(args)
    items = [runtime.tokenize([s], truncate=True) for s in sentences(args.forwards)]
    torch.set_num_threads(cores)
    runtime.forward(items[0])  # start the bigger OpenMP team once, outside the timings
    torch.set_num_threads(1)

    def switched(item: list[Tokenized]) -> Callable[[], object]:
        def run() -> object:
            torch.set_num_threads(cores)
            try:
                return runtime.forward(item)
            finally:
                torch.set_num_threads(1)

        return run

    stop = multiprocessing.Event()
    spinners = [multiprocessing.Process(target=spin, args=(stop,), daemon=True) for _ in range(args.busy)]
    for p in spinners:
        p.start()
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    shares: list[float] = []  # of the "all" passes
    try:
        for item in items:
            times["one"].append(timed(lambda: runtime.forward(item)))
            torch.set_num_threads(cores)
            times["all"].append(timed(lambda: runtime.forward(item), shares, cores))
            torch.set_num_threads(1)
            times["switch"].append(timed(switched(item)))
    finally:
        stop.set()
        for p in spinners:
            p.join(10)
    figures = {mode: {"p50_ms": round(statistics.median(t), 2), "p90_ms": round(statistics.quantiles(t, n=10)[-1], 2)}
               for mode, t in times.items()}  # fmt: skip
    one = figures["one"]["p50_ms"]
    for mode, f in figures.items():
        print(f"{mode:<7} p50 {f['p50_ms']:7.2f} ms  p90 {f['p90_ms']:7.2f} ms  {f['p50_ms'] / one:5.2f}x one's p50")
    over_one = {mode: round(f["p50_ms"] / one, 3) for mode, f in figures.items()}
    ranked = sorted(shares)
    share = {"p1": round(ranked[len(ranked) // 100], 3), "p50": round(statistics.median(ranked), 3)}
    print(f"all's CPU share (process CPU / threads x wall): p1 {share['p1']:.2f}, p50 {share['p50']:.2f}")
    print(json.dumps({"dtype": runtime.dtype, "cores": cores, "busy": args.busy, "forwards": args.forwards,
                      "figures": figures, "over_one": over_one, "all_cpu_share": share}))  # fmt: skip
    return 0
