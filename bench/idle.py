"""`python -m bench idle`: is a forward slower on a core that idled before it? One-sentence
forwards on one pinned thread, as a CPU worker computes, each after a gap of a few milliseconds.

Served, a request that arrives alone spends more time in the model than one that arrives back to
back (``bench serve --rates 25 --batching`` against its c=1 point). This separates what the gap
could have done to the core, interleaving the modes forward by forward over the same sentences:

- ``none``: the forward right after the last one (the back-to-back case);
- ``sleep``: after ``--gap-ms`` asleep (the core may idle: lower clock, deeper sleep state);
- ``spin``: after ``--gap-ms`` of a busy loop that touches no memory (the core stays awake, its
  caches keep the model);
- ``thrash``: after ``--gap-ms`` of writing a buffer larger than the caches (the core stays awake,
  the model is evicted: what other processes do to it meanwhile).

Figures: median and p90 per mode, and each median over ``none``'s. ``sleep`` far above ``spin``
says the idle core itself is slow to come back; ``thrash`` above ``spin`` says the caches are.
``--modes none,sleep`` with a long gap keeps the core idle most of the time, as a lightly loaded
worker's is; its ``none`` against a default run's says whether a mostly idle core computes slower
(on the 2-core dev box it does: ``bench/README.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Callable, Sequence

import numpy as np

from bench.corpus import sentences

MODES = ("none", "sleep", "spin", "thrash")
THRASH_BYTES = 256 << 20  # larger than the last-level cache of the CPUs this runs on
CACHE_LINE = 64


def parse(argv: Sequence[str]) -> argparse.Namespace:
    from bench.target import MODEL_PATH

    p = argparse.ArgumentParser(prog="python -m bench idle", description=__doc__.splitlines()[0])
    p.add_argument("--model-path", default=MODEL_PATH, help="the model's directory or package: ref")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    p.add_argument("--forwards", type=int, default=200, help="forwards per mode")
    p.add_argument("--gap-ms", type=float, default=40.0, help="the gap before each forward but none's")
    p.add_argument("--modes", default=",".join(MODES),
                   help="which, interleaved (none,sleep alone keeps the core idle most of the time, as a "
                        "lightly loaded worker's)")  # fmt: skip
    return p.parse_args(list(argv))


def gaps(seconds: float, buffer: np.ndarray) -> dict[str, Callable[[], None]]:
    """What each mode does before its forward."""

    def spin() -> None:
        until = time.perf_counter() + seconds
        while time.perf_counter() < until:
            pass

    def thrash() -> None:
        until = time.perf_counter() + seconds
        while time.perf_counter() < until:
            buffer[::CACHE_LINE] += 1

    return {"none": lambda: None, "sleep": lambda: time.sleep(seconds), "spin": spin, "thrash": thrash}


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    args.modes = [m for m in MODES if m in args.modes.split(",")]
    if "none" not in args.modes:
        raise SystemExit("--modes must include none, the baseline")
    allowed = os.sched_getaffinity(0)
    core = max(allowed)
    os.sched_setaffinity(0, {core})  # one thread on one core, as a CPU worker computes
    try:
        figures = measure(args)
    finally:
        os.sched_setaffinity(0, allowed)  # run in process (a test), the caller gets its cores back
    none = figures["none"]["p50_ms"]
    over_none = {mode: round(f["p50_ms"] / none, 3) for mode, f in figures.items()}
    for mode, f in figures.items():
        print(f"{mode:<7} p50 {f['p50_ms']:7.2f} ms  p90 {f['p90_ms']:7.2f} ms  {over_none[mode]:5.2f}x none's p50")
    print(json.dumps({"core": core, "gap_ms": args.gap_ms, "forwards": args.forwards, "figures": figures,
                      "over_none": over_none}))  # fmt: skip
    return 0


def measure(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Median and p90 forward time per mode, the modes interleaved forward by forward."""
    import torch

    from bench.split import load

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runtime = load(args)
        items = [runtime.tokenize([s], truncate=True) for s in sentences(args.forwards)]
        before = gaps(args.gap_ms / 1000, np.zeros(THRASH_BYTES, np.uint8))
        times: dict[str, list[float]] = {mode: [] for mode in args.modes}
        runtime.forward(items[0])
        for item in items:
            for mode in args.modes:
                before[mode]()
                started = time.perf_counter()
                runtime.forward(item)
                times[mode].append((time.perf_counter() - started) * 1000)
    finally:
        torch.set_num_threads(threads)
    return {mode: {"p50_ms": round(statistics.median(t), 2), "p90_ms": round(statistics.quantiles(t, n=10)[-1], 2)}
            for mode, t in times.items()}  # fmt: skip
