"""Plots: throughput and p50/p99 latency against concurrency, one line per system, as PNGs.

Rows are dicts with ``system``, ``concurrency``, ``sentences_per_s``, ``p50_ms`` and ``p99_ms``.
Concurrency is on a log-2 axis (the sweeps double it); latency on a log axis, so a baseline ten
times slower and the appliance share one readable plot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server
import matplotlib.pyplot as plt  # noqa: E402

THROUGHPUT_PNG = "throughput.png"
LATENCY_PNG = "latency.png"


def lines(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by_system: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_system.setdefault(str(row["system"]), []).append(row)
    return {system: sorted(points, key=lambda r: r["concurrency"]) for system, points in by_system.items()}


def draw(rows: Sequence[dict[str, Any]], folder: Path, title: str) -> list[Path]:
    """Both plots into ``folder``; the files written (none without rows)."""
    if not rows:
        return []
    systems = lines(rows)
    return [throughput(systems, folder / THROUGHPUT_PNG, title), latency(systems, folder / LATENCY_PNG, title)]


def throughput(systems: dict[str, list[dict[str, Any]]], path: Path, title: str) -> Path:
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for system, points in systems.items():
        axis.plot([p["concurrency"] for p in points], [p["sentences_per_s"] for p in points], marker="o", label=system)
    finish(axis, title, "sentences/s", log_y=False)
    return save(figure, path)


def latency(systems: dict[str, list[dict[str, Any]]], path: Path, title: str) -> Path:
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for n, (system, points) in enumerate(systems.items()):
        color = f"C{n % 10}"
        xs = [p["concurrency"] for p in points]
        axis.plot(xs, [max(p["p50_ms"], 1e-3) for p in points], marker="o", color=color, label=f"{system} p50")
        axis.plot(xs, [max(p["p99_ms"], 1e-3) for p in points], marker="^", linestyle="--", color=color,
                  label=f"{system} p99")  # fmt: skip
    finish(axis, title, "latency (ms)", log_y=True)
    return save(figure, path)


def finish(axis: Any, title: str, ylabel: str, *, log_y: bool) -> None:
    axis.set_xscale("log", base=2)
    if log_y:
        axis.set_yscale("log")
    axis.set_xlabel("concurrency (clients)")
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize="small")


def save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
