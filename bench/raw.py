"""`python -m bench raw`: the model's own throughput in-process, with no server in the way.

Sentences per second through the runtime's real path (batched tokenize, then padded forward) by
batch size (1, 8, 32, 128), by order (length-sorted, as the batcher does, or arrival order) and by
threads (one, and as many as this process may use cores). The all-cores, sorted, batch-32 figure
is **the raw limit**: what serving benchmarks divide their throughput by (``raw_limit()``).

"Sorted" sorts a window of ``SORT_WINDOW`` arrivals by token count before cutting it into batches,
as a saturated batcher does with its pending items; batch 1 has nothing to sort and is measured in
arrival order only. A table goes to stdout, then one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import msgspec

from appliance.config import ModelConfig, default_models, resolve_model_path
from bench.corpus import sentences
from bench.target import served_model
from workers.runtimes import Runtime, load_runtime

BATCHES = (1, 8, 32, 128)
ORDERS = ("sorted", "arrival")
RAW_BATCH = 32
SORT_WINDOW = 512  # arrivals sorted together: what a saturated batcher has pending
DEFAULT_SECONDS = 3.0
CORPUS_SIZE = 4000  # the serving benchmark's corpus size, so the two measure the same texts
STATE_DIR = ".state"


@dataclass(frozen=True, slots=True)
class Point:
    batch: int
    order: str
    threads: int
    sps: float
    sentences: int
    seconds: float


def cores() -> int:
    """Cores this process may run on (affinity, not the machine's count: containers and pinning)."""
    return len(os.sched_getaffinity(0))


def raw_limit(runtime: Runtime, sentences: Sequence[str], threads: int, *, seconds: float = DEFAULT_SECONDS) -> float:
    """Sentences/s with ``threads`` torch threads, length-sorted batches of 32: the serving denominator."""
    return measure(runtime, sentences, batch=RAW_BATCH, order="sorted", threads=threads, seconds=seconds).sps


def measure(runtime: Runtime, corpus: Sequence[str], *, batch: int, order: str, threads: int,
            seconds: float) -> Point:  # fmt: skip
    """Run tokenize+forward for about ``seconds`` (at least one batch) and count sentences."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        warm = next(arrivals(corpus, batch))
        runtime.forward(runtime.tokenize(warm, truncate=True))  # warm-up at this thread count, not timed
        windows = arrivals(corpus, max(SORT_WINDOW, batch) if order == "sorted" else batch)
        started = time.perf_counter()
        deadline, done = started + seconds, 0
        while done == 0 or time.perf_counter() < deadline:
            done += run_window(runtime, next(windows), batch, order, deadline)
        elapsed = time.perf_counter() - started
    finally:
        torch.set_num_threads(previous)
    return Point(batch, order, threads, done / elapsed, done, elapsed)


def arrivals(corpus: Sequence[str], size: int) -> Iterator[list[str]]:
    """Endless windows of ``size`` sentences, cycling through the corpus in its order."""
    stream = itertools.cycle(corpus)
    while True:
        yield list(itertools.islice(stream, size))


def run_window(runtime: Runtime, window: list[str], batch: int, order: str, deadline: float) -> int:
    """Tokenize a window (batched), sort it if asked, forward it batch by batch until the deadline;
    returns the sentences forwarded (the tokenized rest is dropped: a few ms, counted as lost time)."""
    items = runtime.tokenize(window, truncate=True)
    if order == "sorted":
        items.sort(key=lambda item: item.length)
    done = 0
    for start in range(0, len(items), batch):
        runtime.forward(items[start : start + batch])
        done += len(items[start : start + batch])
        if time.perf_counter() >= deadline:
            break
    return done


def measure_raw(args: argparse.Namespace, corpus: list[str], seconds: float) -> float:
    """The HTTP scenarios' denominator: their served model (``bench.target``) in process, every
    core's threads, sorted batches of 32."""
    import torch  # here, not at the top: ``bench raw`` sizes torch's threads itself first

    model = msgspec.convert(served_model(args), ModelConfig)
    runtime = load_runtime(model, resolve_model_path(model.path, ".state"), args.device)
    runtime.warmup()
    threads = os.cpu_count() or 1
    previous = torch.get_num_threads()
    try:
        return float(raw_limit(runtime, corpus, threads, seconds=seconds))
    finally:
        torch.set_num_threads(previous)


def grid(runtime: Runtime, corpus: Sequence[str], seconds: float, thread_counts: Sequence[int]) -> list[Point]:
    points = []
    for threads in thread_counts:
        for batch in BATCHES:
            for order in ORDERS if batch > 1 else ("arrival",):
                points.append(measure(runtime, corpus, batch=batch, order=order, threads=threads, seconds=seconds))
    return points


def limit_of(points: Sequence[Point], threads: int) -> float:
    return next(p.sps for p in points if (p.batch, p.order, p.threads) == (RAW_BATCH, "sorted", threads))


# ---- command line -------------------------------------------------------------------------------
def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench raw", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=default_models()[0].name,
                        help="a default model's name or a local model directory (default: %(default)s)")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="per measured point")
    parser.add_argument("--static", default=None,
                        help="static model directory to measure too (default: the distilled minilm-static if present; "
                             "'none' to skip)")  # fmt: skip
    parser.add_argument("--static-seconds", type=float, default=None, help="per static point (default: seconds / 3)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    parser.add_argument("--compile", action="store_true", help="torch.compile in warm-up")
    parser.add_argument("--device", default="cpu", help="cpu or cuda:N for the transformer (default: %(default)s)")
    parser.add_argument("--cudnn-attention", action="store_true",
                        help="leave attention on torch's cuDNN backend, which the runtimes turn off on CUDA "
                             "(to measure what that choice is worth)")  # fmt: skip
    parser.add_argument("--sentences", type=int, default=CORPUS_SIZE, help="corpus size (default: %(default)s)")
    return parser.parse_args(list(argv))


def model_config(name_or_path: str, kind: str, args: argparse.Namespace) -> tuple[ModelConfig, Path]:
    known = {m.name: m for m in default_models()}
    path = known[name_or_path].path if name_or_path in known else name_or_path
    model = ModelConfig(name=name_or_path, path=path, kind=kind,  # type: ignore[arg-type]
                        dtype=args.dtype, compile=args.compile)  # fmt: skip
    return model, resolve_model_path(path, STATE_DIR)


def static_path(args: argparse.Namespace) -> str | None:
    if args.static == "none":
        return None
    if args.static:
        return args.static
    default = next(m for m in default_models() if m.kind == "static")
    path = resolve_model_path(default.path, STATE_DIR)
    return default.name if path.is_dir() else None


def run_model(name_or_path: str, kind: str, args: argparse.Namespace, corpus: Sequence[str],
              seconds: float) -> dict[str, object]:  # fmt: skip
    model, path = model_config(name_or_path, kind, args)
    started = time.perf_counter()
    runtime = load_runtime(model, path, args.device if kind == "transformer" else "cpu")
    runtime.warmup()
    ready_s = time.perf_counter() - started
    thread_counts = sorted({1, cores()})
    points = grid(runtime, corpus, seconds, thread_counts)
    print(table(model.name, runtime, points), flush=True)
    results = [{**asdict(p), "sps": round(p.sps, 1), "seconds": round(p.seconds, 3)} for p in points]
    return {"model": model.name, "path": str(path), "kind": kind, "device": runtime.device, "dtype": runtime.dtype,
            "compile": model.compile, "load_and_warmup_s": round(ready_s, 2),
            "raw_limit_sps": round(limit_of(points, cores()), 1), "results": results}  # fmt: skip


def table(name: str, runtime: Runtime, points: Sequence[Point]) -> str:
    head = (f"{name} ({runtime.kind}, {runtime.device}, {runtime.dtype}, dim {runtime.dim}, "
            f"max_length {runtime.max_length})")  # fmt: skip
    rows = [f"{'batch':>6}{'order':>9}{'threads':>9}{'sent/s':>12}"]
    for p in points:
        mark = "  <- raw limit" if (p.batch, p.order, p.threads) == (RAW_BATCH, "sorted", cores()) else ""
        rows.append(f"{p.batch:>6}{p.order:>9}{p.threads:>9}{p.sps:>12.1f}{mark}")
    return "\n".join([head, *rows, ""])


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    if args.cudnn_attention:
        from workers.runtimes.hf import CUDNN_ATTENTION_ENV  # imports torch: only when asked

        os.environ[CUDNN_ATTENTION_ENV] = "1"  # read when the runtime is built
    corpus = sentences(args.sentences)
    report: dict[str, object] = {"cores": cores(), "seconds": args.seconds, "corpus": len(corpus),
                                 "sort_window": SORT_WINDOW, "cudnn_attention": args.cudnn_attention}  # fmt: skip
    report.update(run_model(args.model, "transformer", args, corpus, args.seconds))
    static = static_path(args)
    if static is not None:
        static_seconds = args.static_seconds if args.static_seconds is not None else args.seconds / 3
        report["static"] = run_model(static, "static", args, corpus, static_seconds)
    print(json.dumps(report))
    return 0
