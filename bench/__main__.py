"""`python -m bench <scenario> [args]`: each scenario is a module of this package with `main(argv)`."""

from __future__ import annotations

import importlib
import sys

SCENARIOS = {
    "ipc": "bench.ipc",
    "raw": "bench.raw",
    "serve": "bench.serve",
    "encoding": "bench.encoding",
    "faults": "bench.faults",
    "jobs": "bench.jobs",
    "telemetry": "bench.telemetry",
    "restart": "bench.restart",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in SCENARIOS:
        print(f"usage: python -m bench {{{','.join(SCENARIOS)}}} [options]", file=sys.stderr)
        return 2
    module = importlib.import_module(SCENARIOS[argv[0]])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
