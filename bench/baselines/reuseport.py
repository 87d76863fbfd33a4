"""Design (d): several processes behind one port, each with its own model copy (SO_REUSEPORT).

The "just run more workers" answer: the kernel spreads connections over ``processes`` copies of
design (a), each loading the model itself, with ``threads`` torch threads and no shared memory.
A connection stays on the process that accepted it, so a keep-alive client is bound to one
copy. The parent only starts the copies, and stops them when it is told to stop or one dies.
"""

from __future__ import annotations

import multiprocessing
import signal
import time
from multiprocessing.process import BaseProcess
from typing import Any

from aiohttp import web

from bench.baselines import inline
from bench.baselines.model import load

POLL_S = 0.5
STOP_S = 10.0


def serve_copy(model: dict[str, Any], host: str, port: int, threads: int) -> None:
    runtime = load(model["name"], model["path"], dtype=model["dtype"], device=model["device"], threads=threads)
    web.run_app(inline.application(runtime), host=host, port=port, reuse_port=True, print=None,
                handle_signals=True)  # fmt: skip


def serve(model: dict[str, Any], host: str, port: int, *, processes: int, threads: int) -> int:
    """Start ``processes`` copies; return when told to stop (SIGTERM/SIGINT) or when one dies."""
    stopping: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _: stopping.append(signum))  # only recorded; the loop acts
    context = multiprocessing.get_context("spawn")
    copies = [context.Process(target=serve_copy, args=(model, host, port, threads), name=f"copy-{i}")
              for i in range(processes)]  # fmt: skip
    for copy in copies:
        copy.start()
    while not stopping and all(copy.is_alive() for copy in copies):
        time.sleep(POLL_S)
    stop(copies)
    return 0 if stopping else 1


def stop(copies: list[BaseProcess]) -> None:
    for copy in copies:
        if copy.is_alive():
            copy.terminate()
    deadline = time.monotonic() + STOP_S
    for copy in copies:
        copy.join(max(0.0, deadline - time.monotonic()))
        if copy.is_alive():
            copy.kill()
            copy.join()
