"""A load run in its own process, pinned away from the server's cores when the machine has them.

The generator's own CPU time would otherwise be taken from the server it measures (and a Python
client saturates before a fast server does). ``split_cores`` gives the load the last quarter of
the allowed CPUs (at least one) on machines of 4 or more; on smaller ones it shares them all,
because taking one of two cores would halve the server. The caller keeps its servers off the
load's cores by starting them from a process pinned to ``server`` (children inherit the mask).
The process is spawned (no forked event loop or torch state), and its result comes back by pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Iterator, Literal, NamedTuple, Sequence

from bench.loadgen.drive import LoadResult, Target, closed_loop, open_loop
from bench.loadgen.mix import Mix, Request

MIN_CPUS_TO_SPLIT = 4
SPAWN_BOUND_S = 60.0  # starting the process and importing aiohttp, numpy: seconds on a loaded box


class LoadError(RuntimeError):
    """The load process failed or gave no result in time; the message holds its traceback."""


class Cores(NamedTuple):
    server: tuple[int, ...]
    load: tuple[int, ...] | None  # None: shared with the server


def split_cores(cpus: Sequence[int] | None = None) -> Cores:
    allowed = tuple(sorted(os.sched_getaffinity(0) if cpus is None else cpus))
    if len(allowed) < MIN_CPUS_TO_SPLIT:
        return Cores(allowed, None)
    take = max(1, len(allowed) // 4)
    return Cores(allowed[:-take], allowed[-take:])


@contextlib.contextmanager
def pinned(cpus: Sequence[int] | None) -> Iterator[None]:
    """This process (and what it starts meanwhile) on ``cpus`` for the block, then back where it
    was; None leaves it alone (a machine too small to split)."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@dataclass(frozen=True)
class LoadSpec:
    """Everything one load run needs; plain data, it crosses into the load process."""

    target: Target
    mix: Mix
    corpus: tuple[str, ...]
    mode: Literal["closed", "open"] = "closed"
    concurrency: int = 1
    rate: float = 0.0
    seconds: float = 10.0
    warmup: float = 2.0
    scenario: str = "embed"
    timeout: float = 120.0
    cores: tuple[int, ...] | None = None


async def drive(spec: LoadSpec) -> LoadResult:
    def requests(i: int) -> Request:
        return spec.mix.request(spec.corpus, i)

    if spec.mode == "open":
        return await open_loop(spec.target, requests, rate=spec.rate, seconds=spec.seconds, warmup=spec.warmup,
                               seed=spec.mix.seed, scenario=spec.scenario, timeout=spec.timeout)  # fmt: skip
    return await closed_loop(spec.target, requests, concurrency=spec.concurrency, seconds=spec.seconds,
                             warmup=spec.warmup, scenario=spec.scenario, timeout=spec.timeout)  # fmt: skip


def run(spec: LoadSpec) -> LoadResult:
    """Run ``spec`` in a fresh process and return its result (LoadError if it failed or hung)."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_main, args=(spec, sender), name="bench-loadgen", daemon=True)
    process.start()
    sender.close()
    bound = SPAWN_BOUND_S + spec.warmup + spec.seconds + spec.timeout
    try:
        if not receiver.poll(bound):
            raise LoadError(f"the load process gave no result within {bound:.0f} s")
        outcome = receiver.recv()
    except EOFError as exc:
        raise LoadError(f"the load process died (exit code {process.exitcode})") from exc
    finally:
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join()
    if isinstance(outcome, str):
        raise LoadError(f"the load process failed:\n{outcome}")
    return outcome


def _main(spec: LoadSpec, sender: Connection) -> None:
    try:
        if spec.cores:
            os.sched_setaffinity(0, spec.cores)
        sender.send(asyncio.run(drive(spec)))
    except BaseException:  # the parent reports it; nothing else would see a spawned child's error
        sender.send(traceback.format_exc())
    finally:
        sender.close()
