"""Figures: every number a run measured, by a stable dotted name, each with its unit.

A scenario's one-line JSON summary is flattened: nested keys join with dots; a list of points
is keyed by each point's identity (``system``, ``scenario``, ``batch``, ``concurrency``...), not
its position, so the same point has the same name in two runs and ``bench diff`` can pair them.
The unit is read off the key's name (``_ms``, ``sentences_per_s``, ``rps``, ``over``...).

A run's **noise** is the relative spread (max - min) / mean of a figure it measured more than
once under the same conditions: the raw limit before and after the load, or a point's rounds.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterator, Sequence

IDENTITY = ("system", "scenario", "model", "kind", "order", "batch", "threads", "concurrency")
DEFAULT_NOISE = 0.10  # what a run that measured no repeat is assumed to wobble by on a shared box


def unit_of(key: str) -> str:
    name = re.sub(r"\[[^]]*\]", "", key.rsplit(".", 1)[-1]).lower()  # raw_runs[1] is a raw_runs figure
    rules = (
        (("sentences_per_s", "_sps", "sps", "raw_runs"), "sentences/s"),
        (("rps", "_rps", "per_s"), "requests/s"),
        (("_ms",), "ms"),
        (("_us",), "us"),
        (("_s", "seconds"), "s"),
        (("_gib",), "GiB"),
        (("_mb",), "MB"),
    )
    for endings, unit in rules:
        if name.endswith(endings) or name in {e.strip("_") for e in endings}:
            return unit
    if "ratio" in name or "over" in name or name.startswith(("x_", "speedup")):
        return "x"
    return "count"


def figure(value: float, unit: str, spread: float | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"value": value, "unit": unit}
    if spread is not None:
        entry["spread"] = round(spread, 4)
    return entry


def flatten(summary: Any, prefix: str = "") -> dict[str, dict[str, Any]]:
    """Every number of ``summary`` (bools and strings are not figures) as ``{name: figure}``."""
    return {name: figure(value, unit_of(name)) for name, value in _numbers(summary, prefix)}


def _numbers(node: Any, prefix: str) -> Iterator[tuple[str, float]]:
    if isinstance(node, bool) or node is None:
        return
    if isinstance(node, (int, float)):
        yield prefix, float(node)
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _numbers(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, list):
        seen: dict[str, int] = {}
        for index, item in enumerate(node):
            label = identity(item) or str(index)
            seen[label] = seen.get(label, 0) + 1
            label = label if seen[label] == 1 else f"{label}#{seen[label]}"
            child = {k: v for k, v in item.items() if k not in IDENTITY} if isinstance(item, dict) and identity(item) \
                else item  # fmt: skip
            yield from _numbers(child, f"{prefix}[{label}]")


def identity(item: Any) -> str:
    if not isinstance(item, dict):
        return ""
    return "/".join(f"{key}={item[key]}" for key in IDENTITY if key in item)


def spread(values: Sequence[float]) -> float:
    """(max - min) / mean; 0 for fewer than two values or a zero mean."""
    mean = sum(values) / len(values) if values else 0.0
    return (max(values) - min(values)) / mean if len(values) > 1 and mean else 0.0


def noise_of(summary: Any) -> float | None:
    """The run's measured noise: the spread of its repeated raw-limit runs, when it has them."""
    runs = summary.get("raw_runs") if isinstance(summary, dict) else None
    return round(spread(runs), 4) if isinstance(runs, list) and len(runs) > 1 else None


def all_finite(figures: dict[str, dict[str, Any]]) -> list[str]:
    """The names of figures that are not finite numbers (a report check)."""
    return [name for name, entry in figures.items() if not math.isfinite(float(entry["value"]))]
