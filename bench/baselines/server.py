"""`python -m bench.baselines.server DESIGN --port P --model NAME --model-path PATH`: serve one design.

Thread counts come from the caller (``launch.py`` sizes them to the cores); the OpenMP settings
(``OMP_NUM_THREADS``, ``OMP_WAIT_POLICY``) must already be in the environment, because OpenMP
reads them once, when torch loads.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from aiohttp import web

from bench.baselines import DESIGNS


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.baselines.server", description=__doc__.splitlines()[0])
    p.add_argument("design", choices=DESIGNS)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model", required=True, help="served model name")
    p.add_argument("--model-path", required=True, help="its directory or package: ref")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--pool", type=int, default=1, help="threadpool: executor threads")
    p.add_argument("--processes", type=int, default=2, help="reuseport: model copies")
    return p.parse_args(list(argv))


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    model = {"name": args.model, "path": args.model_path, "dtype": args.dtype, "device": args.device}
    if args.design == "reuseport":
        from bench.baselines import reuseport

        return reuseport.serve(model, args.host, args.port, processes=args.processes, threads=args.threads)
    from bench.baselines import inline, microbatch, threadpool
    from bench.baselines.model import load

    runtime = load(args.model, args.model_path, dtype=args.dtype, device=args.device, threads=args.threads)
    app = {"inline": lambda: inline.application(runtime),
           "threadpool": lambda: threadpool.application(runtime, args.pool),
           "microbatch": lambda: microbatch.application(runtime)}[args.design]()  # fmt: skip
    web.run_app(app, host=args.host, port=args.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
