"""Requests for a model with no holder up wait here for one to come back.

A respawn takes seconds, so a request whose model's only holder is down (a recycle, a crash)
parks until a holder's ``Ready`` wakes it, rather than fail at once: one event per model, set by
``wake`` (from ``Router.worker_ready``), no polling; each waits at most until its deadline (503).
At most ``max_parked_requests`` interactive requests park at once; past it, 429 with Retry-After.
Background parts (job chunks, bounded by the job runner) wait uncounted: they never get 429.
"""

from __future__ import annotations

import asyncio
from typing import Callable, Iterable, TypeVar

from gateway import errors

H = TypeVar("H")


class HolderWait:
    def __init__(self, max_parked: int) -> None:
        self.max_parked = max_parked
        self.events: dict[str, asyncio.Event] = {}  # per model, set by the Ready of a holder
        self.waiting = 0  # interactive requests parked in `wait`

    async def wait(self, model: str, deadline: float, background: bool,
                   up_holders: Callable[[str], list[H]]) -> list[H]:  # fmt: skip
        """Park until ``up_holders(model)`` finds one, looking again only when ``wake`` names
        ``model``, at most until ``deadline`` (event loop time; 503). Past ``max_parked``
        interactive waiters, 429 at once."""
        if not background and self.waiting >= self.max_parked:
            raise errors.QueueFull(f"{self.waiting} requests already wait for a worker holding {model!r} "
                                   "(max_parked_requests); retry", retry_after=errors.RETRY_AFTER_S)  # fmt: skip
        counted = 0 if background else 1
        self.waiting += counted
        loop = asyncio.get_running_loop()
        try:
            while not (holders := up_holders(model)):
                came_up = self.events.setdefault(model, asyncio.Event())
                try:
                    await asyncio.wait_for(came_up.wait(), max(0.0, deadline - loop.time()))
                except asyncio.TimeoutError:
                    raise errors.NotReady(f"no worker holding model {model!r} came up within the request's "
                                          "deadline", retry_after=errors.RETRY_AFTER_S) from None  # fmt: skip
        finally:
            self.waiting -= counted
        return holders

    def wake(self, models: Iterable[str]) -> None:
        """A holder of ``models`` came up: the requests parked for them go on at once."""
        for name in models:
            if (came_up := self.events.pop(name, None)) is not None:
                came_up.set()
