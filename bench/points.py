"""A measured point: one load's throughput and latency percentiles, and how points are printed.

Shared by the HTTP scenarios (``serve``, ``faults``): a point counts the requests that finished
inside its measured window; ``errors`` are the non-200 answers in it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Point:
    scenario: str
    batch: int
    concurrency: int
    requests: int
    errors: int
    seconds: float
    rps: float
    sentences_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    ratio_to_raw: float = 0.0


def summarize(scenario: str, batch: int, concurrency: int, latencies: list[float], errors: int,
              seconds: float) -> Point:  # fmt: skip
    """A point from the successful requests' latencies (seconds) over a ``seconds`` window: the load
    generator's, imported here and not at the top because ``bench.loadgen`` imports ``Point``."""
    from bench.loadgen.stats import summarize as loadgen_summarize

    return loadgen_summarize(scenario, batch, concurrency, latencies, errors, seconds)


def table(points: list[Point]) -> str:
    head = f"{'scenario':<10}{'batch':>6}{'conc':>6}{'req/s':>10}{'sent/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'err':>6}{'x raw':>7}"
    rows = [f"{p.scenario:<10}{p.batch:>6}{p.concurrency:>6}{p.rps:>10.1f}{p.sentences_per_s:>10.1f}"
            f"{p.p50_ms:>9.2f}{p.p95_ms:>9.2f}{p.p99_ms:>9.2f}{p.errors:>6}{p.ratio_to_raw:>7.2f}" for p in points]  # fmt: skip
    return "\n".join([head, *rows])


def show(point: Point) -> Point:
    """Print the point's row as soon as it is measured (a long sweep shows its progress)."""
    print(table([point]).splitlines()[1], flush=True)
    return point
