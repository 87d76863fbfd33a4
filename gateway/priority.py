"""Where a part may go now: the router's priority rules (``gateway/router.py``, "Priority") as
functions of the workers' loads, so that the router itself only waits, sends and keeps count.

A worker's load counts every part in flight on it; its ``background`` part, at most one, runs
below the interactive ones in the worker's batcher (``workers/batcher.py``), so an interactive
part is placed by the interactive load alone, and a background part only in a free slot. A worker
whose cores are lent (``gateway/lending.py``) also counts the part computing on them, and loses a
tie to the borrower: a part placed on it would start at once and share its cores with the lent
pass, slowing both (a lent core that turns out busy costs several times the forward), while one
queued behind the lent pass waits less than that pass takes.
"""

from __future__ import annotations

from typing import Protocol, Sequence, TypeVar

from gateway import errors
from gateway.parts import Part


class Load(Protocol):
    """What the rules read of a worker (``gateway.router.WorkerState``)."""

    parts: dict[int, Part]
    outstanding_tokens: int
    outstanding_inputs: int
    background: Part | None  # its one background part in flight, if any
    lent: Part | None  # the part computing on its cores too, in flight on another worker


W = TypeVar("W", bound=Load)


def least_loaded(workers: Sequence[W]) -> W | None:
    """Fewest outstanding tokens (estimated), then inputs, a lent part counted."""
    return min(workers, key=booked, default=None)


def booked(worker: Load) -> tuple[int, int, bool]:
    """Outstanding tokens and inputs, with the part computing on its lent cores; then whether
    its cores are lent."""
    lent = worker.lent
    if lent is None:
        return worker.outstanding_tokens, worker.outstanding_inputs, False
    return worker.outstanding_tokens + lent.tokens, worker.outstanding_inputs + lent.inputs, True


def interactive_load(worker: Load) -> tuple[int, int, bool, int]:
    """What an interactive part queues behind on ``worker``: interactive tokens, then inputs
    (a lent part counted), then two tie-breaks: away from lent cores, away from background work."""
    other = worker.background
    tokens, inputs, lent = booked(worker)
    return (tokens - (other.tokens if other else 0), inputs - (other.inputs if other else 0), lent,
            worker.outstanding_tokens)  # fmt: skip


def free_slots(workers: Sequence[W]) -> list[W]:
    """The workers with no background part in flight."""
    return [w for w in workers if w.background is None]


def place(part: Part, holders: Sequence[W], limit: int) -> W | None:
    """Where ``part`` goes now, ``limit`` being ``max_pending_inputs``. Interactive: the holder
    least loaded with interactive work; 429 ``QueueFull`` when its interactive inputs would pass
    the limit (a worker with none takes any part). Background: the least-loaded holder with a
    free slot whose inputs, all of them, stay within the limit (or that is idle); None while
    there is none, and the part waits."""
    if part.background:
        return least_loaded([w for w in free_slots(holders) if w.outstanding_inputs + part.inputs <= limit
                             or not w.parts])  # fmt: skip
    worker = min(holders, key=interactive_load)
    pending = interactive_load(worker)[1]
    if pending and pending + part.inputs > limit:
        raise errors.QueueFull(f"worker queue full ({pending} inputs pending); retry",
                               retry_after=errors.RETRY_AFTER_S)  # fmt: skip
    return worker
