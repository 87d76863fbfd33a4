"""`python -m bench <scenario> [--quiet] [--results DIR] [args]` (also `appliance bench ...`).

Each scenario is a module of this package with ``main(argv)``. Every run but ``diff`` writes a
results folder (``bench/results/<timestamp>/``, or under ``--results DIR``): scenarios that build
their own (``compare``, ``all``) have ``run_recorded``; the others print their tables and one JSON
line, which ``bench.reporting.record`` captures into the folder. ``--quiet`` turns the progress bar off.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

SCENARIOS = {
    "ipc": "bench.ipc",
    "raw": "bench.raw",
    "serve": "bench.serve",
    "encoding": "bench.encoding",
    "faults": "bench.faults",
    "jobs": "bench.jobs",
    "telemetry": "bench.telemetry",
    "split": "bench.split",
    "exactness": "bench.exactness",
    "lone": "bench.lone",
    "idle": "bench.idle",
    "restart": "bench.restart",
    "gateway-cpu": "bench.gateway_cpu",
    "at-rest": "bench.at_rest",
    "refusals": "bench.refusals",
    "compare": "bench.compare",
    "all": "bench.everything",
    "diff": "bench.diff",
}
UNRECORDED = {"diff"}  # compares two results folders; measures nothing


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in SCENARIOS:
        print(f"usage: python -m bench {{{','.join(SCENARIOS)}}} [--quiet] [--results DIR] [options]", file=sys.stderr)
        return 2
    from bench.reporting.record import new_folder, options, recorded

    name, rest = argv[0], argv[1:]
    module = importlib.import_module(SCENARIOS[name])
    if name in UNRECORDED:
        return int(module.main(rest) or 0)
    quiet, base, rest = options(rest)

    def folder() -> Path:
        return new_folder(base)

    if hasattr(module, "run_recorded"):
        return int(module.run_recorded(rest, quiet=quiet, folder=folder))
    return recorded(name, module, rest, folder)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
