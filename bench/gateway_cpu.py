"""`python -m bench gateway-cpu`: the gateway's CPU time per request, with a model that costs ~nothing.

With the static model (a table lookup and a mean: ~0.1 ms a batch) the model's cost is close to
zero, so what a request costs the machine is the serving path itself: HTTP, JSON, validation,
routing, the ring records, polling and waking on both sides. This scenario starts an appliance on
that model with its cache off, drives it with a closed loop (single sentences from the bench
corpus, ``--concurrency`` connections), and reads the CPU time (user + system, from ``psutil``)
of the gateway process and of each worker over the measured window, divided by the requests
answered in it: microseconds of CPU per request, by process. It also reports how much the
gateway's resident memory grew per 1,000 requests: near 0 once warm, or something is kept.

The same load then drives the HTTP floor (``bench/floor.py``: a bare aiohttp app on uvloop
answering every POST with the appliance's own answer bytes), measured the same way: no gateway
written on aiohttp can go below it, so ``gateway - floor`` is the part of a request's CPU that
the gateway's own code costs, and the most any work on it could save.

``--against DIR`` (repeatable) measures other checkouts of the appliance in the same run, e.g.
an earlier commit made with ``git worktree add /tmp/before <commit>``: each is started from its
own directory, and the systems are measured in turn, ``--rounds`` times, interleaved, so that the
box's drift hits every system alike. The table gives each system's figures as a ratio of the
first (this checkout). The machine is shared: read the spread across rounds before a ratio.
Last line: one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, TypeVar

import psutil

from appliance.config import STATIC_MODEL_NAME, default_models, resolve_model_path
from bench.corpus import sentences
from bench.cpu_split import cpu_seconds as process_seconds
from bench.floor import floor_process
from bench.launcher import Appliance, running
from bench.serve import one_answer
from bench.loadgen import closed_loop_point, corpus_texts

FLOOR = "http floor (bare aiohttp)"
HERE = Path(__file__).resolve().parent.parent  # this checkout's root
DEFAULT_STATE = HERE / ".state"

T = TypeVar("T")


@dataclass
class Sample:
    """One measured window of one system."""

    system: str
    requests: int
    rps: float
    p50_ms: float
    gateway_us: float  # gateway CPU per request
    workers_us: float  # all workers' CPU per request, together
    gateway_growth_kb: float  # the gateway's resident memory growth per 1,000 requests

    @property
    def total_us(self) -> float:
        return self.gateway_us + self.workers_us


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench gateway-cpu", description=__doc__.splitlines()[0])
    p.add_argument("--model-path", default=None,
                   help="static model directory (default: the distilled minilm-static under .state)")  # fmt: skip
    p.add_argument("--workers", default="2")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--against", action="append", default=[],
                   help="another checkout of the appliance to measure in the same run (repeatable)")  # fmt: skip
    return p.parse_args(argv)


def static_model_path(args: argparse.Namespace) -> Path:
    if args.model_path:
        return Path(args.model_path).resolve()
    default = next(m for m in default_models() if m.name == STATIC_MODEL_NAME)
    path = resolve_model_path(default.path, str(DEFAULT_STATE))
    if not path.is_dir():
        raise SystemExit(f"no static model at {path}: run `appliance models distill` (make serve does) "
                         "or pass --model-path")  # fmt: skip
    return path


def cpu_seconds(pids: Sequence[int]) -> float:
    """The processes' CPU seconds together; one that is gone counts nothing."""
    total = 0.0
    for pid in pids:
        try:
            total += process_seconds(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    return total


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def measure(system: str, url: str, gateway: int, workers: list[int], args: argparse.Namespace,
            corpus: list[str]) -> Sample:  # fmt: skip
    """A warm-up load, then the measured one between two CPU readings of every process."""
    texts = corpus_texts(corpus, 1)
    asyncio.run(closed_loop_point(url, STATIC_MODEL_NAME, texts, args.concurrency, args.warmup, 0.0))
    gateway_before, workers_before, rss_before = cpu_seconds([gateway]), cpu_seconds(workers), rss(gateway)
    point = asyncio.run(closed_loop_point(url, STATIC_MODEL_NAME, texts, args.concurrency, args.seconds, 0.0))
    gateway_cpu = cpu_seconds([gateway]) - gateway_before
    workers_cpu = cpu_seconds(workers) - workers_before
    growth = rss(gateway) - rss_before
    if point.errors or not point.requests:
        raise SystemExit(f"{system}: {point.errors} failed request(s) of {point.requests + point.errors}")
    per = 1e6 / point.requests
    return Sample(system, point.requests, point.rps, point.p50_ms, gateway_cpu * per, workers_cpu * per,
                  growth / 1024 * 1000 / point.requests)  # fmt: skip


def run_system(system: str, source: Path, args: argparse.Namespace, model: Path,
               corpus: list[str]) -> tuple[Sample, bytes]:  # fmt: skip
    """The system's sample, and one of its answers (the floor's body)."""
    models = [{"name": STATIC_MODEL_NAME, "path": str(model), "kind": "static", "main": True}]
    with tempfile.TemporaryDirectory(prefix="bench-gateway-cpu-") as tmp, \
            running(models, workdir=Path(tmp), workers=args.workers, env={"APPLIANCE_CACHE_BYTES": "0"},
                    cwd=source) as started:  # fmt: skip
        sample = measure(system, started.url, started.pid, started.worker_pids(), args, corpus)
        body = json.dumps({"model": STATIC_MODEL_NAME, "input": corpus[0]}).encode()
        return sample, one_answer(started.url, body, {})


def run_floor(answer: bytes, args: argparse.Namespace, corpus: list[str]) -> Sample:
    with floor_process(answer) as (url, pid):
        return measure(FLOOR, url, pid, [], args, corpus)


def summary(samples: list[Sample]) -> dict[str, dict[str, float]]:
    """Per system: the median of each figure over the rounds, and the gateway figure's spread."""
    out: dict[str, dict[str, float]] = {}
    for system in dict.fromkeys(s.system for s in samples):
        mine = [s for s in samples if s.system == system]
        gateway = [s.gateway_us for s in mine]
        out[system] = {
            "rps": round(statistics.median(s.rps for s in mine), 1),
            "p50_ms": round(statistics.median(s.p50_ms for s in mine), 2),
            "gateway_us_per_request": round(statistics.median(gateway), 1),
            "gateway_spread": round((max(gateway) - min(gateway)) / statistics.median(gateway), 3),
            "workers_us_per_request": round(statistics.median(s.workers_us for s in mine), 1),
            "total_us_per_request": round(statistics.median(s.total_us for s in mine), 1),
            "gateway_growth_kb_per_1k_requests": round(statistics.median(s.gateway_growth_kb for s in mine), 1),
        }
    return out


def show(round_: int, sample: Sample) -> Sample:
    print(f"round {round_ + 1} {sample.system}: {sample.rps:.0f} req/s, gateway {sample.gateway_us:.0f} us/req, "
          f"workers {sample.workers_us:.0f} us/req", flush=True)  # fmt: skip
    return sample


def print_table(figures: dict[str, dict[str, float]]) -> None:
    first = next(iter(figures.values()))
    print(f"{'system':<28}{'req/s':>9}{'p50 ms':>9}{'gateway us/req':>16}{'spread':>8}{'workers us/req':>16}"
          f"{'gateway vs first':>18}{'RSS KB/1k req':>15}")  # fmt: skip
    for system, f in figures.items():
        ratio = f["gateway_us_per_request"] / first["gateway_us_per_request"]
        print(f"{system:<28}{f['rps']:>9.1f}{f['p50_ms']:>9.2f}{f['gateway_us_per_request']:>16.1f}"
              f"{f['gateway_spread']:>8.2f}{f['workers_us_per_request']:>16.1f}{ratio:>17.2f}x"
              f"{f['gateway_growth_kb_per_1k_requests']:>15.1f}")  # fmt: skip


def rotated(items: list[T], round_: int) -> list[T]:
    """``items`` starting one further along each round: on a loaded box the system measured first
    in a round read higher in every run, so each takes that slot in turn."""
    shift = round_ % len(items) if items else 0
    return items[shift:] + items[:shift]


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    model = static_model_path(args)
    corpus = sentences()
    systems = {"this checkout": HERE, **{str(Path(d)): Path(d).resolve() for d in args.against}}
    samples: list[Sample] = []
    for round_ in range(args.rounds):
        answer = b""
        for system, source in rotated(list(systems.items()), round_):
            sample, answer = run_system(system, source, args, model, corpus)
            samples.append(show(round_, sample))
        samples.append(show(round_, run_floor(answer, args, corpus)))
    figures = summary(samples)
    print_table(figures)
    print(json.dumps({"scenario": "gateway-cpu", "concurrency": args.concurrency, "seconds": args.seconds,
                      "rounds": args.rounds, "systems": figures}))  # fmt: skip
    return 0
