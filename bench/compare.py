"""`python -m bench compare`: the appliance beside the designs it replaces, in one run, interleaved.

Every system serves the same model on this machine at once (the appliance with its cache off, and
each design of ``bench/baselines``), and the load generator (``bench.loadgen``, in its own
process, on its own cores where the machine has 4 or more) drives each through OpenAI's
``/v1/embeddings`` with the same seeded corpus requests. For each round and each concurrency,
every system gets one closed-loop point in turn, the order rotating, so a neighbour's burst on a
shared machine falls on all of them alike. The model's raw limit (``bench.raw``: in process,
sorted batches of 32) is measured before and after; its spread is the run's noise.

Each point is reported as a ratio of the raw limit and of the appliance at the same concurrency.
Then an open loop (Poisson arrivals, latency from the scheduled time) at ``--open-fraction`` of the
appliance's best measured throughput shows its tail under a realistic arrival process. The
results folder holds the tables, the figures and the throughput and latency plots.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from bench.baselines import DESIGNS
from bench.baselines.launch import running
from bench.corpus import sentences
from bench.loadgen import LoadResult, LoadSpec, Mix, Target, run, split_cores
from bench.raw import measure_raw
from bench.reporting import figures as figs
from bench.reporting import progress
from bench.reporting.record import Run, new_folder, options
from bench.target import add_options, appliance, auth_headers

SYSTEMS = ("appliance", *DESIGNS)
CORPUS_SIZE = 4000
TARGET_CONCURRENCY = 32  # where the appliance must be 2x the best baseline with at most half its p99


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench compare", description=__doc__.splitlines()[0])
    add_options(p, workers="auto")
    p.add_argument("--device", default="cpu", help="device of the raw-limit measurement (cpu, cuda:0)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated, of: " + ", ".join(SYSTEMS))
    p.add_argument("--concurrency", default="1,8,16,32,64")
    p.add_argument("--batch", type=int, default=1, help="sentences per request")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per point")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds; >1 gives each point a spread")
    p.add_argument("--raw-seconds", type=float, default=5.0, help="seconds of each raw-limit measurement")
    p.add_argument("--open-fraction", type=float, default=0.8,
                   help="open loop at this fraction of the appliance's best throughput (0: none)")  # fmt: skip
    p.add_argument("--request-timeout", type=float, default=120.0)
    args = p.parse_args(list(argv))
    unknown = set(args.systems.split(",")) - set(SYSTEMS)
    if unknown:
        p.error(f"unknown systems {sorted(unknown)}: choose from {', '.join(SYSTEMS)}")
    return args


@dataclass
class Row:
    """One system at one concurrency: the median over its rounds, and their spread."""

    system: str
    concurrency: int
    sentences_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    spread: float
    ratio_to_raw: float = 0.0
    ratio_to_appliance: float = 0.0


@contextlib.contextmanager
def servers(args: argparse.Namespace, systems: Sequence[str]) -> Iterator[dict[str, Target]]:
    """Every system up at once (the appliance with its cache off), each as a load target."""
    env = dict(kv.split("=", 1) for kv in args.env)
    with contextlib.ExitStack() as stack:
        targets: dict[str, Target] = {}
        for system in systems:
            if system == "appliance":
                url, _ = stack.enter_context(appliance(args, {"APPLIANCE_CACHE_BYTES": "0"}))
                targets[system] = Target(url, "openai", auth_headers(args.api_key))
            else:
                url = stack.enter_context(running(system, model=args.model, model_path=args.model_path,
                                                  dtype=args.dtype, env=env))  # fmt: skip
                targets[system] = Target(url, "openai")
        yield targets


def rotated(systems: Sequence[str], turn: int) -> list[str]:
    """The systems in an order that moves by one every turn: none is always first after an idle gap."""
    shift = turn % len(systems)
    return [*systems[shift:], *systems[:shift]]


def point(args: argparse.Namespace, target: Target, system: str, concurrency: int, corpus: tuple[str, ...],
          load_cores: tuple[int, ...] | None, seed: int) -> LoadResult:  # fmt: skip
    spec = LoadSpec(target, Mix((args.model,), batch=args.batch, seed=seed), corpus, concurrency=concurrency,
                    seconds=args.seconds, warmup=args.warmup, scenario=system, timeout=args.request_timeout,
                    cores=load_cores)  # fmt: skip
    return run(spec)


def sweep(args: argparse.Namespace, targets: dict[str, Target], corpus: tuple[str, ...],
          load_cores: tuple[int, ...] | None, bar: Any) -> dict[tuple[str, int], list[LoadResult]]:  # fmt: skip
    samples: dict[tuple[str, int], list[LoadResult]] = {}
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    turn = 0
    for round_ in range(args.rounds):
        for concurrency in concurrencies:
            for system in rotated(list(targets), turn):
                bar.set_postfix_str(f"{system} c{concurrency}")
                result = point(args, targets[system], system, concurrency, corpus, load_cores, seed=round_)
                samples.setdefault((system, concurrency), []).append(result)
                bar.update()
            turn += 1
    return samples


def combine(samples: dict[tuple[str, int], list[LoadResult]], raw: float) -> list[Row]:
    rows = []
    for (system, concurrency), results in samples.items():
        sps = [r.point.sentences_per_s for r in results]
        rows.append(Row(system, concurrency, round(statistics.median(sps), 1),
                        round(statistics.median(r.point.p50_ms for r in results), 2),
                        round(statistics.median(r.point.p99_ms for r in results), 2),
                        sum(r.point.errors for r in results), round(figs.spread(sps), 4)))  # fmt: skip
    own = {row.concurrency: row.sentences_per_s for row in rows if row.system == "appliance"}
    for row in rows:
        row.ratio_to_raw = round(row.sentences_per_s / raw, 3) if raw else 0.0
        appliance_sps = own.get(row.concurrency)
        row.ratio_to_appliance = round(row.sentences_per_s / appliance_sps, 3) if appliance_sps else 0.0
    return sorted(rows, key=lambda r: (r.concurrency, SYSTEMS.index(r.system)))


def open_loop_point(args: argparse.Namespace, target: Target, rows: list[Row], corpus: tuple[str, ...],
                    load_cores: tuple[int, ...] | None) -> dict[str, Any] | None:  # fmt: skip
    """The appliance under Poisson arrivals at ``--open-fraction`` of its best closed-loop rate."""
    best = max((r.sentences_per_s for r in rows if r.system == "appliance"), default=0.0)
    rate = args.open_fraction * best / args.batch
    if rate <= 0:
        return None
    spec = LoadSpec(target, Mix((args.model,), batch=args.batch, seed=99), corpus, mode="open", rate=rate,
                    seconds=args.seconds, warmup=args.warmup, scenario="appliance-open",
                    timeout=args.request_timeout, cores=load_cores)  # fmt: skip
    result = run(spec)
    p = result.point
    return {"fraction_of_capacity": args.open_fraction, "offered_rps": result.offered_rps, "rps": p.rps,
            "p50_ms": p.p50_ms, "p99_ms": p.p99_ms, "p99_over_p50": round(p.p99_ms / p.p50_ms, 2) if p.p50_ms else 0.0,
            "errors": p.errors, "failures": result.failures, "send_lag_p99_ms": result.send_lag_p99_ms}  # fmt: skip


def targets_met(rows: list[Row], opened: dict[str, Any] | None) -> dict[str, float]:
    """The product's claims, as figures: the appliance over the best baseline from c8 up (x), and at
    c32 its p99 over that baseline's; the open loop's p99 over its p50."""
    found: dict[str, float] = {}
    for concurrency in sorted({r.concurrency for r in rows if r.concurrency >= 8}):
        here = [r for r in rows if r.concurrency == concurrency]
        own = next((r for r in here if r.system == "appliance"), None)
        rivals = [r for r in here if r.system != "appliance"]
        if own is None or not rivals:
            continue
        best = max(rivals, key=lambda r: r.sentences_per_s)
        found[f"c{concurrency}.over_best_baseline"] = round(own.sentences_per_s / best.sentences_per_s, 3) \
            if best.sentences_per_s else 0.0  # fmt: skip
        if concurrency == TARGET_CONCURRENCY:
            p99_ratio = round(own.p99_ms / best.p99_ms, 3) if best.p99_ms else 0.0
            found[f"c{concurrency}.p99_ratio_to_best_baseline"] = p99_ratio
    if opened:
        found["open.p99_over_p50"] = opened["p99_over_p50"]
    return found


def table(rows: list[Row]) -> str:
    lines = ["| system | conc | sentences/s | x raw | x appliance | p50 ms | p99 ms | errors | spread |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    lines += [f"| {r.system} | {r.concurrency} | {r.sentences_per_s:.1f} | {r.ratio_to_raw:.2f} | "
              f"{r.ratio_to_appliance:.2f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.errors} | {r.spread:.2f} |"
              for r in rows]  # fmt: skip
    return "\n".join(lines)


def tables(args: argparse.Namespace, raw: float, raws: list[float], rows: list[Row], opened: dict[str, Any] | None,
           claims: dict[str, float]) -> str:  # fmt: skip
    out = [f"## Closed loop, {args.batch} sentence(s) per request, {args.seconds:g} s per point, {args.rounds} round(s)",
           "", f"Raw limit ({args.model}, in process, sorted batches of 32): **{raw:.1f} sentences/s** "
           f"(runs: {', '.join(f'{r:.1f}' for r in raws)}).", "", table(rows), ""]  # fmt: skip
    if opened:
        out += [f"## Open loop at {opened['fraction_of_capacity']:.0%} of the appliance's best throughput", "",
                f"{opened['offered_rps']:.1f} req/s offered, {opened['rps']:.1f} answered; p50 {opened['p50_ms']:.1f} ms, "
                f"p99 {opened['p99_ms']:.1f} ms = **{opened['p99_over_p50']:.2f}x p50**; errors {opened['errors']}; "
                f"client send lag p99 {opened['send_lag_p99_ms']:.1f} ms.", ""]  # fmt: skip
    if claims:
        out += ["## Against the targets", "", *(f"- `{k}`: {v:g}" for k, v in claims.items()), ""]
    return "\n".join(out)


def figures_of(raw: float, raws: list[float], rows: list[Row], opened: dict[str, Any] | None,
               claims: dict[str, float]) -> dict[str, dict[str, Any]]:  # fmt: skip
    found = {"raw_limit_sps": figs.figure(round(raw, 1), "sentences/s", figs.spread(raws))}
    for r in rows:
        name = f"{r.system}.c{r.concurrency}"
        found[f"{name}.sentences_per_s"] = figs.figure(r.sentences_per_s, "sentences/s", r.spread)
        for key, unit in (("p50_ms", "ms"), ("p99_ms", "ms"), ("errors", "count"), ("ratio_to_raw", "x"),
                          ("ratio_to_appliance", "x")):  # fmt: skip
            found[f"{name}.{key}"] = figs.figure(getattr(r, key), unit)
    if opened:
        found.update(figs.flatten({k: v for k, v in opened.items() if k != "failures"}, "open"))
    found.update(figs.flatten(claims, "targets"))
    return found


def run_recorded(argv: Sequence[str], *, quiet: bool, folder: Callable[[], Path]) -> int:
    """The run, its results written into ``folder()`` (made only once there is something to write)."""
    args = parse(argv)
    record = Run("compare", list(argv), vars(args))
    cores = split_cores()
    if cores.load:
        os.sched_setaffinity(0, cores.server)  # the servers started below inherit it
    corpus = tuple(sentences(CORPUS_SIZE))
    systems = args.systems.split(",")
    points = args.rounds * len(args.concurrency.split(",")) * len(systems)
    with progress.bar(points + 3, "compare", quiet=quiet) as bar:
        raws = [measure_raw(args, list(corpus), args.raw_seconds)]
        bar.update()
        with servers(args, systems) as targets:
            samples = sweep(args, targets, corpus, cores.load, bar)
            raw_now = statistics.mean(raws)
            rows = combine(samples, raw_now)
            opened = open_loop_point(args, targets["appliance"], rows, corpus, cores.load) \
                if "appliance" in targets and args.open_fraction > 0 else None  # fmt: skip
            bar.update()
        raws.append(measure_raw(args, list(corpus), args.raw_seconds))
        bar.update()
    raw = statistics.mean(raws)
    rows = combine(samples, raw)
    claims = targets_met(rows, opened)
    text = tables(args, raw, raws, rows, opened, claims)
    summary = {"model": args.model, "raw_limit_sps": round(raw, 1), "raw_runs": [round(r, 1) for r in raws],
               "cores": {"server": list(cores.server), "load": list(cores.load or [])},
               "rows": [vars(r) for r in rows], "open_loop": opened, "targets": claims}  # fmt: skip
    written = folder()
    record.write(written, summary=summary, figures=figures_of(raw, raws, rows, opened, claims),
                 noise=round(figs.spread(raws), 4), tables=text, rows=[vars(r) for r in rows])  # fmt: skip
    print(text)
    print(json.dumps(summary))
    print(f"results: {written}", file=sys.stderr)
    return 0


def main(argv: Sequence[str]) -> int:
    quiet, base, rest = options(argv)
    return run_recorded(rest, quiet=quiet, folder=lambda: new_folder(base))
