"""How the workers batched during one measured point, and where a request's time went.

Read from the appliance's own ``/metrics`` before and after a point, so the figures are what
that load really did:

- batching, from the workers' cumulative counters summed over workers: batches, inputs per
  batch, padded over real tokens, ms per batch;
- stages, from the histograms' sums and counts of the route the point drove (the one with the
  most requests in between): the mean time per request in the gateway's handler, and in the
  worker's queue, tokenizer and model. Against the client's mean round trip (a closed loop's
  concurrency over its request rate) they split a request's time into client and HTTP, gateway
  (handler minus worker stages: routing, the rings, the wake-ups, the answer) and worker.

A worker reports its counters every ``STATS_LAG_S`` at most, so each read waits that long first;
the difference then covers the point's warm-up and measured window, both under the same load.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass

COUNTERS = ("batches", "batch_inputs", "tokens", "padded_tokens", "compute_seconds")
STAGES = ("request_duration", "queue", "tokenize", "inference")  # appliance_<stage>_seconds histograms
STATS_LAG_S = 1.2  # a worker sends its counters once a second (``WorkerSpec.stats_interval_s``)
_SAMPLE = re.compile(r'^appliance_(\w+?)_seconds_(sum|count)\{.*?route="([^"]*)".*\} (\S+)$')

Reading = dict[str, float]  # COUNTERS, and "<stage>_<sum|count>@<route>"


@dataclass(frozen=True, slots=True)
class Batching:
    batches: int
    inputs_per_batch: float
    padding_ratio: float  # padded over real tokens: what the model computed over what it needed
    ms_per_batch: float
    stage_ms: dict[str, float]  # STAGES -> mean ms per request of the point's route

    def line(self, client_ms: float) -> str:
        """``client_ms``: the client's mean round trip over the same point."""
        stages = ", ".join(f"{name} {ms:.2f}" for name, ms in self.stage_ms.items())
        return (f"  batching: {self.batches} batches, {self.inputs_per_batch:.1f} inputs each, padding "
                f"{self.padding_ratio:.2f}x real tokens, {self.ms_per_batch:.1f} ms each\n"
                f"  mean ms per request: client {client_ms:.2f}, {stages}")  # fmt: skip


def read_counters(url: str, headers: dict[str, str]) -> Reading:
    """The workers' batching counters summed over workers, and every route's stage sums and counts."""
    request = urllib.request.Request(url + "/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
    totals: Reading = dict.fromkeys(COUNTERS, 0.0)
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        counter = name.removeprefix("appliance_worker_").removesuffix("_total")
        if name.startswith("appliance_worker_") and counter in totals:
            totals[counter] += float(rest.rsplit(" ", 1)[-1])
        elif (match := _SAMPLE.match(line)) and match[1] in STAGES:
            key = f"{match[1]}_{match[2]}@{match[3]}"
            totals[key] = totals.get(key, 0.0) + float(match[4])
    return totals


def settled_counters(url: str, headers: dict[str, str]) -> Reading:
    """``read_counters`` once every worker has reported what it ran so far."""
    time.sleep(STATS_LAG_S)
    return read_counters(url, headers)


def between(before: Reading, after: Reading) -> Batching:
    d = Counter({name: after[name] - before.get(name, 0.0) for name in after})
    batches = int(d["batches"])
    return Batching(batches, d["batch_inputs"] / batches if batches else 0.0,
                    d["padded_tokens"] / d["tokens"] if d["tokens"] else 0.0,
                    1000 * d["compute_seconds"] / batches if batches else 0.0, stage_means(d))  # fmt: skip


def stage_means(d: Counter[str]) -> dict[str, float]:
    """Mean ms per request in each stage, on the route that served the most requests in between."""
    routes = Counter({key.partition("@")[2]: n for key, n in d.items() if key.startswith("request_duration_count@")})
    if not routes or routes.most_common(1)[0][1] <= 0:
        return {}
    route = routes.most_common(1)[0][0]
    # a stage's count is the requests that reached a worker (cache hits do not): its own denominator
    return {stage: 1000 * d[f"{stage}_sum@{route}"] / d[f"{stage}_count@{route}"]
            for stage in STAGES if d[f"{stage}_count@{route}"] > 0}  # fmt: skip
