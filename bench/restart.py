"""`python -m bench restart`: how long a worker takes to serve again, compiled against eager.

For each mode (eager, then ``compile = true``) on a fresh ``state_dir``, one appliance with one
worker (this bench starts it through ``bench.launcher``):

1. **first start**: the launch until ``/ready`` and the worker up in ``/stats`` (a compiled
   worker compiles here and leaves its artefacts under ``state_dir``);
2. **respawn**: SIGKILL the ready worker, then poll ``/stats`` every 100 ms until the slot is up
   under a new pid (the supervisor's back-off, 0.5 s, is part of it);
3. **restart**: SIGTERM the appliance and launch it again on the same ``state_dir`` until ready.

Eager is the baseline of the same run: every compiled figure is also given as a ratio to eager's
same figure, and the compiled respawn and restart as a ratio to the compiled first start. Each
worker's own "model ... loaded in N s" log line (load + warm-up, without the torch import) is
reported next to the wall times. Last line: one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from bench.launcher import Appliance, fetch, start
from bench.target import MODEL, MODEL_PATH

POLL_S = 0.1
LOADED = re.compile(r"model '[^']+' loaded from .* in ([0-9.]+)s")


@dataclass
class Mode:
    """One mode's figures, in seconds."""

    name: str
    first_start: float = 0.0
    respawn: float = 0.0
    restart: float = 0.0
    loads: list[float] = field(default_factory=list)  # the worker's own load + warm-up, in start order


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench restart", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=MODEL, help="served model name")
    p.add_argument("--model-path", default=MODEL_PATH, help="its directory or package: ref")
    p.add_argument("--respawn-timeout", type=float, default=300.0, help="give up on a respawn after this long")
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE for every appliance this bench starts")
    p.add_argument("--modes", default="eager,compiled", help="which of eager,compiled to measure, in order")
    return p.parse_args(argv)


def launch(args: argparse.Namespace, workdir: Path, compiled: bool) -> tuple[Appliance, float]:
    """An appliance on ``workdir/state`` serving with its one worker up; (it, seconds it took)."""
    model = {"name": args.model, "path": args.model_path, "main": True, "compile": compiled}
    settings = {"APPLIANCE_READY_TIMEOUT": "600", **dict(kv.split("=", 1) for kv in args.env)}
    started = time.perf_counter()
    appliance = start([model], workdir=workdir, workers=1, env=settings, ready_timeout=900)
    return appliance, time.perf_counter() - started


def worker(appliance: Appliance) -> dict[str, Any]:
    body = fetch(appliance.url + "/stats", appliance.headers)
    (card,) = json.loads(body)["workers"] if body else [{"up": False, "pid": 0}]
    return dict(card)


def respawn(appliance: Appliance, timeout: float) -> float:
    """SIGKILL the ready worker; seconds until its slot is up under a new pid."""
    pid = worker(appliance)["pid"]
    appliance.worker_pids()  # noted, so the launcher's leftover check covers it
    started = time.perf_counter()
    os.kill(pid, signal.SIGKILL)
    while time.perf_counter() - started < timeout:
        card = worker(appliance)
        if card["up"] and card["pid"] not in (0, pid):
            appliance.worker_pids()
            return time.perf_counter() - started
        time.sleep(POLL_S)
    raise SystemExit(f"the worker did not come back within {timeout:.0f}s\n{appliance.log_tail()}")


def measure(args: argparse.Namespace, compiled: bool) -> Mode:
    mode = Mode("compiled" if compiled else "eager")
    with tempfile.TemporaryDirectory(prefix=f"bench-restart-{mode.name}-") as tmp:
        workdir = Path(tmp)
        appliance, mode.first_start = launch(args, workdir, compiled)
        try:
            mode.respawn = respawn(appliance, args.respawn_timeout)
        finally:
            appliance.close()
        mode.loads = loads(appliance)
        appliance, mode.restart = launch(args, workdir, compiled)  # same state_dir, a new log
        appliance.close()
        mode.loads += loads(appliance)
    return mode


def loads(appliance: Appliance) -> list[float]:
    return [float(seconds) for seconds in LOADED.findall(appliance.log())]


def ratios(modes: list[Mode]) -> dict[str, float]:
    """Compiled over the eager baseline of the same run, and over its own first start."""
    by_name = {m.name: m for m in modes}
    if set(by_name) != {"eager", "compiled"}:
        return {}
    eager, compiled = by_name["eager"], by_name["compiled"]
    return {
        "compiled_first_over_eager_first": round(compiled.first_start / eager.first_start, 2),
        "compiled_respawn_over_eager_respawn": round(compiled.respawn / eager.respawn, 2),
        "compiled_restart_over_eager_restart": round(compiled.restart / eager.restart, 2),
        "compiled_respawn_over_compiled_first": round(compiled.respawn / compiled.first_start, 2),
        "compiled_restart_over_compiled_first": round(compiled.restart / compiled.first_start, 2),
    }


def show(modes: list[Mode]) -> None:
    print(f"{'mode':<10}{'first start s':>15}{'respawn s':>11}{'restart s':>11}   worker load+warm-up s")
    for m in modes:
        print(f"{m.name:<10}{m.first_start:>15.1f}{m.respawn:>11.1f}{m.restart:>11.1f}   "
              f"{', '.join(f'{s:.1f}' for s in m.loads)}")  # fmt: skip


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    modes = [measure(args, compiled=name == "compiled") for name in args.modes.split(",")]
    show(modes)
    figures = {"model": args.model, **{m.name: asdict(m) for m in modes}, **ratios(modes)}
    print(json.dumps(figures))
    return 0
