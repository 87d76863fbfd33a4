"""The load generator every HTTP scenario drives servers with.

- ``drive``: the closed loop (fixed concurrency) and the open loop (Poisson arrivals, latency
  from the scheduled send time), over a ``Target`` (URL, API, headers, expected dimensions).
- ``mix``: what each request sends (single, batch-N, a repeat fraction over a hot set, mixed
  models, long inputs), fixed by a seed.
- ``apis``: the ollama, OpenAI and TEI embedding APIs, and the check every answer passes
  (status, one vector per text, the model's dimension).
- ``schedule``: the open loop's Poisson send times. ``stats``: percentiles, the ``Point``.
- ``process``: a load run in its own process, pinned away from the server's cores.

``closed_loop_point`` keeps the older call shape (a function from request number to texts,
the appliance's ``/api/embed``) for scenarios that drive one appliance from their own process;
``pinned`` puts that process on the load's cores for the load (``split_cores``).
"""

from __future__ import annotations

from typing import Callable

from bench.loadgen.drive import LoadResult, Target, closed_loop, open_loop
from bench.loadgen.mix import Mix, Request
from bench.loadgen.process import LoadError, LoadSpec, pinned, run, split_cores
from bench.points import Point

__all__ = ["LoadError", "LoadResult", "LoadSpec", "Mix", "Request", "Target", "Texts", "closed_loop",
           "closed_loop_point", "corpus_texts", "open_loop", "pinned", "run", "split_cores"]  # fmt: skip

Texts = Callable[[int], list[str]]  # request number -> the texts it sends


def corpus_texts(corpus: list[str], batch: int) -> Texts:
    """Consecutive corpus sentences: the serving sweep, run with the cache off."""
    return lambda i: [corpus[(i * batch + k) % len(corpus)] for k in range(batch)]


async def closed_loop_point(url: str, model: str, texts: Texts, concurrency: int, seconds: float, warmup: float,
                            scenario: str = "embed", headers: dict[str, str] | None = None,
                            api: str = "ollama") -> Point:  # fmt: skip
    """A closed loop in this process whose request ``i`` sends ``texts(i)`` to ``model``."""
    target = Target(url, api, dict(headers or {}))
    result = await closed_loop(target, lambda i: Request(model, texts(i)), concurrency=concurrency,
                               seconds=seconds, warmup=warmup, scenario=scenario)  # fmt: skip
    return result.point
