"""`python -m bench diff OLD NEW`: what changed between two results folders, beyond the noise.

Figures are paired by name. A change counts when the ratio NEW/OLD moves further from 1 than the
noise of either run: the larger of each run's measured noise (``results.json`` ``noise``: the
spread of its repeated raw-limit runs), each figure's own spread over rounds, and ``--min-noise``;
a run that measured no noise is taken to wobble by ``figures.DEFAULT_NOISE``. Whether a change
is better or worse follows the unit: throughput and ratios up is better, time down is better;
counts are reported without a verdict. Exit code 1 when anything got worse (a regression check
to run before and after a change), else 0.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, NamedTuple, Sequence

from bench.reporting.figures import DEFAULT_NOISE
from bench.reporting.record import RESULTS_JSON

HIGHER_IS_BETTER = {"sentences/s", "requests/s", "x"}
LOWER_IS_BETTER = {"ms", "us", "s"}


class Change(NamedTuple):
    name: str
    unit: str
    old: float
    new: float
    ratio: float
    noise: float
    verdict: str  # "better", "worse" or "changed"


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench diff", description=__doc__.splitlines()[0])
    p.add_argument("old", type=Path, help="results folder (or its results.json) before the change")
    p.add_argument("new", type=Path, help="results folder (or its results.json) after it")
    p.add_argument("--min-noise", type=float, default=0.02, help="smallest relative change ever flagged")
    return p.parse_args(list(argv))


def load(path: Path) -> dict[str, Any]:
    file = path / RESULTS_JSON if path.is_dir() else path
    return dict(json.loads(file.read_text()))


def run_noise(results: dict[str, Any]) -> float:
    noise = results.get("noise")
    return float(noise) if noise is not None else DEFAULT_NOISE


def changes(old: dict[str, Any], new: dict[str, Any], min_noise: float) -> list[Change]:
    """The figures of both runs whose change is beyond the noise, largest first."""
    found = []
    base_noise = max(run_noise(old), run_noise(new), min_noise)
    for name in sorted(set(old["figures"]) & set(new["figures"])):
        before, after = old["figures"][name], new["figures"][name]
        a, b = float(before["value"]), float(after["value"])
        noise = max(base_noise, float(before.get("spread", 0)), float(after.get("spread", 0)))
        if a == b or (a == 0 and abs(b) < 1e-12):
            continue
        ratio = b / a if a else float("inf")
        if abs(ratio - 1) <= noise:
            continue
        found.append(Change(name, after["unit"], a, b, ratio, noise, verdict(after["unit"], ratio)))
    return sorted(found, key=lambda c: -abs(c.ratio - 1) if c.ratio != float("inf") else float("-inf"))


def verdict(unit: str, ratio: float) -> str:
    if unit in HIGHER_IS_BETTER:
        return "better" if ratio > 1 else "worse"
    if unit in LOWER_IS_BETTER:
        return "better" if ratio < 1 else "worse"
    return "changed"


def table(found: list[Change]) -> str:
    lines = ["| figure | unit | old | new | new/old | noise | verdict |", "|---|---|---:|---:|---:|---:|---|"]
    lines += [f"| `{c.name}` | {c.unit} | {c.old:g} | {c.new:g} | {c.ratio:.3f} | {c.noise:.3f} | {c.verdict} |"
              for c in found]  # fmt: skip
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    old, new = load(args.old), load(args.new)
    found = changes(old, new, args.min_noise)
    shared = len(set(old["figures"]) & set(new["figures"]))
    print(f"{old.get('scenario')} {old.get('started')} -> {new.get('scenario')} {new.get('started')}: "
          f"{shared} figures in both, {len(found)} changed beyond the noise")  # fmt: skip
    if found:
        print(table(found))
    worse = [c for c in found if c.verdict == "worse"]
    print(json.dumps({"figures": shared, "changed": len(found), "worse": [c.name for c in worse],
                      "better": [c.name for c in found if c.verdict == "better"]}))  # fmt: skip
    return 1 if worse else 0
