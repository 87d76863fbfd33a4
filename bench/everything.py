"""`python -m bench all [--quick]`: every scenario in turn, into one results folder.

Each scenario writes its own subfolder (``<folder>/<scenario>/``: results.json, report.md, plots),
and the top folder gets an index: ``report.md`` linking them, ``results.json`` with every
scenario's figures under its name. ``--quick`` runs each for seconds (the test suite runs it on a
tiny model: ``--model tiny --model-path DIR``); without it every scenario runs its defaults,
which takes an hour or more. A scenario that fails is reported and the others still run; the
exit code is then 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import traceback
from pathlib import Path
from typing import Callable, Sequence

from bench.reporting import progress
from bench.reporting.record import RESULTS_JSON, Run, new_folder, options, recorded
from bench.target import MODEL, MODEL_PATH

ORDER = ("ipc", "raw", "encoding", "serve", "faults", "jobs", "compare")
MODEL_FREE = {"ipc", "encoding"}
QUICK: dict[str, list[str]] = {
    "ipc": ["--rounds", "1", "--latency-trips", "50", "--throughput-trips", "300", "--window", "8",
            "--ring-bytes", "65536"],  # fmt: skip
    "raw": ["--seconds", "0.05", "--sentences", "300", "--static", "none"],
    "encoding": ["--rounds", "2", "--budget-ms", "2"],
    "serve": ["--workers", "1", "--seconds", "0.5", "--warmup", "0.2", "--raw-seconds", "0.3", "--concurrency", "1,4",
              "--batches", "1,4", "--scenarios", "throughput,repeat", "--repeat-fractions", "0,0.6",
              "--repeat-concurrency", "4"],  # fmt: skip
    "faults": ["--workers", "2", "--concurrency", "2", "--duration", "2.5", "--kill-every", "1", "--warmup", "0.5",
               "--request-timeout", "20"],  # fmt: skip
    "jobs": ["--workers", "2", "--job-size", "600", "--stream-size", "300", "--concurrency", "2", "--seconds", "1",
             "--warmup", "0.3", "--raw-seconds", "0.5"],  # fmt: skip
    "compare": ["--workers", "1", "--concurrency", "1,4", "--seconds", "0.5", "--warmup", "0.2",
                "--raw-seconds", "0.3"],  # fmt: skip
}


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench all", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="seconds per scenario (a check that all of it runs)")
    p.add_argument("--model", default=MODEL, help="served model name")
    p.add_argument("--model-path", default=MODEL_PATH, help="its directory or package: ref")
    p.add_argument("--scenarios", default=",".join(ORDER), help="comma-separated, of: " + ", ".join(ORDER))
    return p.parse_args(list(argv))


def scenario_argv(name: str, args: argparse.Namespace) -> list[str]:
    quick = QUICK[name] if args.quick else []
    if name in MODEL_FREE:
        return quick
    if name == "raw":  # raw takes a configured model's name or a model directory
        return ["--model", args.model if args.model_path == MODEL_PATH else args.model_path, *quick]
    return ["--model", args.model, "--model-path", args.model_path, *quick]


def run_one(name: str, argv: list[str], folder: Path) -> int:
    from bench.__main__ import SCENARIOS  # here: the dispatcher imports this module by name

    module = importlib.import_module(SCENARIOS[name])

    def here() -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    try:
        if hasattr(module, "run_recorded"):
            return int(module.run_recorded(argv, quiet=True, folder=here))
        return recorded(name, module, argv, here)
    except Exception:  # one scenario's failure is reported; the others still run
        traceback.print_exc()
        return 1


def index(root: Path, outcomes: dict[str, int]) -> tuple[dict[str, dict[str, object]], float | None, str]:
    """Every scenario's figures under its name, the largest noise measured, and the index table."""
    figures: dict[str, dict[str, object]] = {}
    noises: list[float] = []
    lines = ["| scenario | outcome | report |", "|---|---|---|"]
    for name, code in outcomes.items():
        results = root / name / RESULTS_JSON
        if code == 0 and results.exists():
            found = json.loads(results.read_text())
            figures.update({f"{name}.{key}": value for key, value in found["figures"].items()})
            if found.get("noise") is not None:
                noises.append(float(found["noise"]))
        lines.append(f"| {name} | {'ok' if code == 0 else f'FAILED ({code})'} | [{name}/report.md]({name}/report.md) |")
    if (root / "compare" / "throughput.png").exists():
        lines += ["", "![throughput](compare/throughput.png)", "", "![latency](compare/latency.png)"]
    return figures, max(noises) if noises else None, "\n".join(lines)


def run_recorded(argv: Sequence[str], *, quiet: bool, folder: Callable[[], Path]) -> int:
    args = parse(argv)
    record = Run("all", list(argv), vars(args))
    names = [n for n in args.scenarios.split(",") if n]
    unknown = set(names) - set(ORDER)
    if unknown:
        print(f"bench all: unknown scenarios {sorted(unknown)}: choose from {', '.join(ORDER)}", file=sys.stderr)
        return 2
    root = folder()
    outcomes: dict[str, int] = {}
    with progress.bar(len(names), "all", quiet=quiet) as bar:
        for name in names:
            bar.set_postfix_str(name)
            outcomes[name] = run_one(name, scenario_argv(name, args), root / name)
            bar.update()
    figures, noise, table = index(root, outcomes)
    record.write(root, summary={"outcomes": outcomes}, figures=figures, noise=noise, tables=table)
    print(table)
    print(json.dumps({"outcomes": outcomes, "folder": str(root)}))
    return 0 if all(code == 0 for code in outcomes.values()) else 1


def main(argv: Sequence[str]) -> int:
    quiet, base, rest = options(argv)
    return run_recorded(rest, quiet=quiet, folder=lambda: new_folder(base))
