"""How the workers batched during one measured point: padding ratio, inputs per batch, busy share.

Read from the appliance's own ``/metrics`` before and after a point (the workers' cumulative
counters, summed over workers), so the figures are the batches that load really formed. A
worker reports its counters every ``STATS_LAG_S`` at most, so the after-read waits that long;
the difference then covers the point's warm-up and measured window, both under the same load.
"""

from __future__ import annotations

import time
import urllib.request
from dataclasses import dataclass

COUNTERS = ("batches", "batch_inputs", "tokens", "padded_tokens", "compute_seconds")
STATS_LAG_S = 1.2  # a worker sends its counters once a second (``WorkerSpec.stats_interval_s``)


@dataclass(frozen=True, slots=True)
class Batching:
    batches: int
    inputs_per_batch: float
    padding_ratio: float  # padded over real tokens: what the model computed over what it needed
    ms_per_batch: float

    def line(self) -> str:
        return (f"  batching: {self.batches} batches, {self.inputs_per_batch:.1f} inputs each, padding "
                f"{self.padding_ratio:.2f}x real tokens, {self.ms_per_batch:.1f} ms each")  # fmt: skip


def read_counters(url: str, headers: dict[str, str]) -> dict[str, float]:
    """The workers' batching counters from ``/metrics``, summed over workers."""
    request = urllib.request.Request(url + "/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
    totals = dict.fromkeys(COUNTERS, 0.0)
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        counter = name.removeprefix("appliance_worker_").removesuffix("_total")
        if name.startswith("appliance_worker_") and counter in totals:
            totals[counter] += float(rest.rsplit(" ", 1)[-1])
    return totals


def settled_counters(url: str, headers: dict[str, str]) -> dict[str, float]:
    """``read_counters`` once every worker has reported what it ran so far."""
    time.sleep(STATS_LAG_S)
    return read_counters(url, headers)


def between(before: dict[str, float], after: dict[str, float]) -> Batching:
    d = {name: after[name] - before[name] for name in COUNTERS}
    batches = int(d["batches"])
    return Batching(batches, d["batch_inputs"] / batches if batches else 0.0,
                    d["padded_tokens"] / d["tokens"] if d["tokens"] else 0.0,
                    1000 * d["compute_seconds"] / batches if batches else 0.0)  # fmt: skip
