"""`appliance` command line: serve, check, models distill, install-systemd, bench.

The composition root: the one module of ``appliance/`` that imports ``gateway`` and ``workers``
(``compose`` wires them together); every other module of ``appliance/`` depends only on
``appliance`` itself. How a built appliance starts and stops is ``appliance/serving.py``.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from appliance import host, logs
from appliance.config import Config, ConfigError, describe, load_config, resolve_model_path
from appliance.guards import MemoryGuard
from appliance.link import WorkerLink
from appliance.serving import Parts
from appliance.slots import plan_slots
from appliance.supervisor import Supervisor

log = logging.getLogger("appliance")


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not hasattr(args, "run"):
        parser().print_help()
        return 2
    return int(args.run(args) or 0)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="appliance", description="Text embedding and rerank appliance.")
    commands = root.add_subparsers(title="commands")
    serve = commands.add_parser("serve", help="run the gateway and its workers")
    config_flags(serve)
    serve.set_defaults(run=cmd_serve)
    check = commands.add_parser("check", help="validate a config and the host, print the effective config")
    config_flags(check)
    check.set_defaults(run=cmd_check)
    models = commands.add_parser("models", help="model utilities").add_subparsers(title="model commands")
    distill = models.add_parser("distill", help="make a static (Model2Vec) model from a transformer, offline")
    distill.add_argument("--from", dest="source", default="all-MiniLM-L6-v2",
                         help="model directory, package:ref, or a configured model name")  # fmt: skip
    distill.add_argument("--out", required=True, help="output directory")
    distill.add_argument("--pca-dims", type=int, default=256)
    distill.add_argument("--force", action="store_true", help="rebuild even if --out already holds a model")
    distill.set_defaults(run=cmd_distill)
    systemd = commands.add_parser("install-systemd", help="install the systemd unit, its env and config files")
    systemd.add_argument("--prefix", default="/", help="staging root (systemctl runs only when it is /)")
    systemd.add_argument("--dry-run", action="store_true", help="print every step, change nothing")
    systemd.set_defaults(run=cmd_install_systemd)
    bench = commands.add_parser("bench", add_help=False, help="benchmarks: the same as `python -m bench`")
    bench.add_argument("argv", nargs=argparse.REMAINDER, help="scenario and its options")
    bench.set_defaults(run=cmd_bench)
    return root


def config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML config file")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", help="'auto' or a count")
    p.add_argument("--state-dir", dest="state_dir")
    p.add_argument("--log-level", dest="log_level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", dest="log_format", choices=list(logs.FORMATS))


def load(args: argparse.Namespace) -> Config | None:
    workers: Any = args.workers
    if isinstance(workers, str) and workers.isdigit():
        workers = int(workers)
    flags = {"host": args.host, "port": args.port, "workers": workers, "state_dir": args.state_dir,
             "log_level": args.log_level, "log_format": args.log_format}  # fmt: skip
    try:
        return load_config(args.config, flags=flags)
    except ConfigError as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return None


def configure_logging(level: str, log_format: str = "text") -> None:
    logs.configure(level, log_format)  # the workers inherit the format (appliance/logs.py)


# ---- check ----------------------------------------------------------------------------------
def cmd_check(args: argparse.Namespace) -> int:
    config = load(args)
    if config is None:
        return 2
    print(describe(config))
    problems = host.problems(config)
    print("\n# host")
    for line in host.report(config):
        print(f"# {line}")
    for problem in problems:
        print(f"appliance: {problem}", file=sys.stderr)
    return 1 if problems else 0


# ---- bench ----------------------------------------------------------------------------------
def cmd_bench(args: argparse.Namespace) -> int:
    from bench.__main__ import main as bench_main  # here: the bench harness is not needed to serve

    return bench_main(list(args.argv))


# ---- distill --------------------------------------------------------------------------------
def cmd_distill(args: argparse.Namespace) -> int:
    configure_logging("info")
    out = Path(args.out)
    if (out / "model.safetensors").exists() and not args.force:
        print(f"{out} already holds a distilled model (use --force to rebuild)")
        return 0
    source = distill_source(args.source)
    from workers.distill import distill

    distill(source, out, pca_dims=args.pca_dims)
    print(f"distilled {source} -> {out}")
    return 0


def distill_source(source: str) -> Path:
    config = load_config(environ={})
    model = config.model(source)
    return resolve_model_path(model.path if model else source, config.state_dir)


# ---- install-systemd ------------------------------------------------------------------------
def cmd_install_systemd(args: argparse.Namespace) -> int:
    from appliance import install

    return install.main(args.prefix, args.dry_run)


# ---- serve ----------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    config = load(args)
    if config is None:
        return 2
    configure_logging(config.log_level, config.log_format)
    problems = host.problems(config)
    if problems:
        for problem in problems:
            log.error("%s", problem)
        return 1
    import uvloop

    from appliance.serving import serve

    return uvloop.run(serve(config, compose))


def compose(config: Config) -> Parts:
    """The composition root: the one place that wires the gateway, the supervisor and the
    worker entry point together. Builds objects only: nothing is started or allocated here."""
    import workers.main
    from gateway import access_log
    from gateway.admission import Admission
    from gateway.app import build_app
    from gateway.cached_backend import CachedBackend
    from gateway.connections import GuardedRunner
    from gateway.jobs.service import Jobs
    from gateway.preload import preload, read_preload_file
    from gateway.router import Router

    guard = MemoryGuard(config.memory_floor)
    # a bad preload or keys file fails now (StartupError), before any worker; never as open access
    queries = read_preload_file(config.preload_file)
    admission = Admission.from_config(config, guard)
    slots = plan_slots(config.workers, config.gateway_cores)
    link = WorkerLink(config.ring_bytes, len(slots))
    router = Router(config, link)
    worker_command = [sys.executable, "-m", workers.main.__name__]
    supervisor = Supervisor(config, slots, link, router, worker_command)
    backend = CachedBackend(config, router)  # admission -> cache -> coalesce -> route
    jobs = Jobs(config, backend)
    app = build_app(config, backend, admission, jobs)
    # the gateway's connection bounds, and its access log (none unless configured)
    runner = functools.partial(GuardedRunner, config=config, **access_log.runner_options(config))
    # a preload entry naming a model not served, or a job store that cannot be opened, fails the
    # start as a StartupError of its own: serving.py needs no adapter for either
    return Parts(config, link, supervisor, router, guard, app, lambda stopping: preload(backend, queries, stopping),
                 jobs, runner)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
