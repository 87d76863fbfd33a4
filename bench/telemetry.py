"""`python -m bench telemetry`: what ``Telemetry.record`` costs per request, against the floor of
any Python call with the same arguments, in the same run.

The gateway records every request once (``gateway/telemetry.py``); the cache-hit path serves
~10,000 requests/s on a small box, ~100 us each, so a record must stay a small fraction of that.
Cases: a cache hit (no worker stages), a computed request (three stage histograms too), a probe
(counted, kept out of the windows), an error. Each is timed over ``--calls`` calls, best of
``--repeat``; the baseline is a do-nothing function taking the same arguments.
"""

from __future__ import annotations

import argparse
import json
import timeit
from typing import Sequence

from gateway.backend import Timings
from gateway.telemetry import Served, Telemetry


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench telemetry", description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=200_000)
    p.add_argument("--repeat", type=int, default=5)
    return p.parse_args(argv)


def nothing(route: object, method: str, status: int, elapsed_ns: int, served: object, error: object) -> None:
    """The baseline: a call with record's arguments that does nothing."""


def per_call_us(call: object, calls: int, repeat: int) -> float:
    return min(timeit.repeat(call, number=calls, repeat=repeat)) / calls * 1e6  # type: ignore[arg-type]


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    telemetry = Telemetry()
    embed, probe = telemetry.route("/api/embed"), telemetry.route("/health")
    hit, computed = Served(1, 1, 0, None), Served(1, 0, 1, Timings(800, 120, 2500))
    cases = {
        "baseline (empty call)": lambda: nothing(embed, "POST", 200, 95_000, hit, None),
        "cache hit": lambda: telemetry.record(embed, "POST", 200, 95_000, hit, None),
        "computed (with stages)": lambda: telemetry.record(embed, "POST", 200, 4_200_000, computed, None),
        "probe (not windowed)": lambda: telemetry.record(probe, "GET", 200, 40_000, None, None),
        "error (429)": lambda: telemetry.record(embed, "POST", 429, 60_000, None, "rate_limited"),
    }
    figures = {name: per_call_us(call, args.calls, args.repeat) for name, call in cases.items()}
    floor = figures["baseline (empty call)"]
    for name, us in figures.items():
        print(f"{name:<24}{us:8.3f} us/call{us / floor:8.1f}x the empty call")
    print(json.dumps({"us_per_call": {k: round(v, 3) for k, v in figures.items()},
                      "over_empty_call": {k: round(v / floor, 2) for k, v in figures.items()}}))  # fmt: skip
    return 0
