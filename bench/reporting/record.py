"""The results folder of one run: ``bench/results/<UTC timestamp>/`` (git-ignored).

- ``results.json``: scenario, command, start and end, the machine and versions
  (``machine.py``), the effective config (the scenario's parsed options, and what it set on the
  servers it started), the measured noise, every figure with its unit (``figures.py``), and the
  scenario's own summary as it printed it.
- ``report.md``: the command, machine and commit, the scenario's tables, the plots, then every
  figure.
- ``throughput.png``, ``latency.png``: when the run has points against concurrency.

``recorded`` wraps a scenario that prints its tables and ends with one JSON line (``raw``,
``serve``...): stdout is teed, so the tables still show as they come, and the folder is written
from what was printed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator, Sequence, TextIO

from bench.reporting import figures as figs
from bench.reporting import plots
from bench.reporting.machine import machine, versions

RESULTS = Path(__file__).resolve().parents[1] / "results"
RESULTS_JSON = "results.json"
REPORT_MD = "report.md"


def new_folder(base: Path | None = None) -> Path:
    """A fresh ``<base>/<UTC timestamp>`` folder (suffixed ``-2``, ``-3``... within one second)."""
    root = base or RESULTS
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1, 1000):
        folder = root / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            continue
    raise RuntimeError(f"no free results folder under {root} for {stamp}")


@dataclass
class Run:
    """One run being recorded: what it was asked, when it started, and what it found."""

    scenario: str
    argv: list[str]
    config: dict[str, Any]
    started: float = field(default_factory=time.time)
    machine: dict[str, Any] = field(default_factory=machine)  # taken at the start: the load average then

    def write(self, folder: Path, *, summary: Any, figures: dict[str, dict[str, Any]], noise: float | None,
              tables: str, rows: Sequence[dict[str, Any]] = ()) -> list[Path]:  # fmt: skip
        """results.json, report.md and the plots into ``folder``; the files written."""
        pngs = plots.draw(rows, folder, f"{self.scenario}: {self.machine['cpu_model']}")
        finished = time.time()
        results = {"scenario": self.scenario, "command": self.command(), "started": iso(self.started),
                   "finished": iso(finished), "duration_s": round(finished - self.started, 1),
                   "machine": self.machine, "versions": versions(), "config": jsonable(self.config),
                   "noise": noise, "figures": figures, "summary": summary,
                   "files": [RESULTS_JSON, REPORT_MD, *(p.name for p in pngs)]}  # fmt: skip
        (folder / RESULTS_JSON).write_text(json.dumps(results, indent=1) + "\n")
        (folder / REPORT_MD).write_text(report(results, tables, pngs))
        return [folder / RESULTS_JSON, folder / REPORT_MD, *pngs]

    def command(self) -> str:
        return shlex.join(["appliance", "bench", self.scenario, *self.argv])


def iso(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, timezone.utc).isoformat(timespec="seconds")


def jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def report(results: dict[str, Any], tables: str, pngs: Sequence[Path]) -> str:
    m, v = results["machine"], results["versions"]
    lines = [f"# `{results['scenario']}`, {results['started']}", "",
             f"- command: `{results['command']}`",
             f"- machine: {m['cpu_model']}, {m['cores']} cores ({m['cores_allowed']} allowed), "
             f"{m['memory_gib']} GiB, GPU: {', '.join(m['gpus']) or 'none'}, flags: {' '.join(m['cpu_flags']) or '-'}",
             f"- load average at start: {' '.join(map(str, m['load_average']))} (a shared machine is noisy: "
             "compare ratios from one run, not figures across runs)",
             f"- versions: torch {v['torch']}, python {v['python']}, commit {v['commit']}",
             f"- measured noise: {results['noise'] if results['noise'] is not None else 'not measured'}",
             f"- took {results['duration_s']} s", "", tables.rstrip(), ""]  # fmt: skip
    lines += [f"![{png.stem}]({png.name})" for png in pngs]
    lines += ["", "## Every figure", "", "| figure | value | unit |", "|---|---:|---|"]
    lines += [f"| `{name}` | {entry['value']:g} | {entry['unit']} |" for name, entry in results["figures"].items()]
    return "\n".join(lines) + "\n"


class Tee(io.TextIOBase):
    """Writes to the real stream and keeps a copy."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.copy = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


@contextlib.contextmanager
def teed_stdout() -> Iterator[Tee]:
    tee = Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):  # type: ignore[type-var]
        yield tee


def last_json(printed: str) -> Any:
    for line in reversed(printed.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("the scenario printed no JSON summary line")


def point_rows(summary: Any) -> list[dict[str, Any]]:
    """Plot rows from a summary's ``points``: one line per (scenario, batch)."""
    points = summary.get("points") if isinstance(summary, dict) else None
    rows = [{**p, "system": f"{p['scenario']} x{p['batch']}"} for p in points or []
            if isinstance(p, dict) and {"scenario", "batch", "concurrency", "sentences_per_s", "p99_ms"} <= set(p)
            and p["concurrency"] > 0]  # fmt: skip
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["system"]] = counts.get(row["system"], 0) + 1
    return [row for row in rows if counts[row["system"]] > 1]  # a line needs two points


def recorded(name: str, module: ModuleType, argv: list[str], folder: Callable[[], Path]) -> int:
    """Run a table-printing scenario with stdout teed, then write its results into ``folder()``
    (made only then: a run that fails or only prints its help leaves no empty folder)."""
    config = vars(module.parse(argv)) if hasattr(module, "parse") else {"argv": argv}
    run = Run(name, argv, config)
    with teed_stdout() as tee:
        code = int(module.main(argv) or 0)
    if code != 0:
        return code
    printed = tee.copy.getvalue()
    summary = last_json(printed)
    tables = "```\n" + "\n".join(line for line in printed.splitlines() if not line.startswith("{")) + "\n```"
    written = folder()
    run.write(written, summary=summary, figures=figs.flatten(summary),
              noise=figs.noise_of(summary), tables=tables,
              rows=point_rows(summary))  # fmt: skip
    print(f"results: {written}", file=sys.stderr)
    return 0


def options(argv: Sequence[str]) -> tuple[bool, Path | None, list[str]]:
    """(``--quiet``, ``--results DIR``, the rest): the options every scenario takes from the dispatcher."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--results", type=Path)
    known, rest = parser.parse_known_args(list(argv))
    return known.quiet, known.results, rest
