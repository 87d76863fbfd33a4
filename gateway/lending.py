"""Idle cores a lone request may borrow: the router's lending rule as a function of the workers'
loads, so that the router itself only asks and sends.

On a CPU machine each worker computes on its own cores, one torch thread per core. At low load the
other workers' cores idle while one worker computes alone, and a one-sentence forward on every core
takes about 0.7x its time on one, when OpenMP's threads spin between the forward's parallel
regions (``python -m bench lone``; a worker that may borrow does, ``workers/pinning.py``). A
worker cannot tell that the others are idle; the gateway can, since it books every part in flight.
So it lends the idle workers' cores to the worker it sends a lone request to (``Embed.spare_cores``,
``Rerank.spare_cores``), and that worker runs the pass with one thread per core, its own and the
lent ones, then goes back to its own.

A wrong guess costs far more than a right one saves (a lent core that turns out busy: 1.5x the
median forward and 8x its p90, ``bench/README.md``), so cores are lent only when all of this holds:

- the part is interactive: a job's chunk is throughput work, and it runs while other work waits;
- it is its request's only part: the parts of one request go to several workers at once;
- its worker computes on the CPU and has nothing else outstanding;
- no other worker, up or not, has anything outstanding, nor had for ``IDLE_BEFORE_LENDING_S``:
  a worker busy a moment ago says requests come faster than one at a time, and the next one,
  arriving while the lent pass runs, would have to wait for it (below);

and only the cores of the other *up CPU* workers are lent: a GPU worker's cores feed its GPU, and
a worker that is not up may be loading its model on its own.

Until the lent part is answered, each lender counts it as its own load (``Lender.lent``,
``gateway/priority.py``): a part that arrives meanwhile queues behind the lent pass on the
borrower, for less than that pass takes, instead of starting on the lender at once and sharing a
lent core with it, which slowed both (open-loop p99 1.7-2.9x at 25-100 requests/s).
"""

from __future__ import annotations

from typing import Protocol, Sequence

from gateway.parts import Part

# How long every other worker must have had nothing outstanding before its cores are lent: about
# five single-sentence forwards, so at two or more requests in flight at once nothing is lent.
IDLE_BEFORE_LENDING_S = 0.05


class Lender(Protocol):
    """What the rule reads of a worker (``gateway.router.WorkerState``)."""

    up: bool
    device: str  # "cpu" or "cuda:<gpu>", from its Ready
    cores: list[int]  # the cores it is pinned to, from its Ready
    parts: dict[int, Part]  # in flight on it
    lent: Part | None  # the part computing on its cores too, in flight elsewhere
    idle_since: float  # time.monotonic() when its last part left it (or it came up)


def spare_cores(part: Part, worker: Lender, workers: Sequence[Lender], *, alone: bool, now: float) -> list[int]:
    """The idle cores ``part`` may borrow on ``worker`` (not yet booked there), sorted; empty when
    it must compute on the worker's own. ``alone``: ``part`` is its request's only part; ``now``:
    ``time.monotonic()``."""
    if not alone or part.background or not on_cpu(worker) or worker.parts:
        return []
    lent: set[int] = set()
    for other in workers:
        if other is worker:
            continue
        if other.parts or other.lent is not None or now - other.idle_since < IDLE_BEFORE_LENDING_S:
            return []  # someone else computes, or did a moment ago: not a lone request
        if other.up and on_cpu(other):
            lent.update(other.cores)
    return sorted(lent.difference(worker.cores))


def on_cpu(worker: Lender) -> bool:
    return worker.device == "cpu"
