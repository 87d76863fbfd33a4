"""`appliance` command line: serve, check, models distill.

The one module allowed to wire the gateway, the supervisor and the worker entry point together
(DESIGN.md section 10): everything else depends only on ``appliance``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any, Sequence

import psutil

from appliance import sdnotify
from appliance.config import Config, ConfigError, describe, load_config, resolve_model_path

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
    return root


def config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML config file")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", help="'auto' or a count")
    p.add_argument("--state-dir", dest="state_dir")
    p.add_argument("--log-level", dest="log_level", choices=["debug", "info", "warning", "error"])


def load(args: argparse.Namespace) -> Config | None:
    workers: Any = args.workers
    if isinstance(workers, str) and workers.isdigit():
        workers = int(workers)
    flags = {"host": args.host, "port": args.port, "workers": workers, "state_dir": args.state_dir,
             "log_level": args.log_level}  # fmt: skip
    try:
        return load_config(args.config, flags=flags)
    except ConfigError as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return None


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s gateway %(levelname)s %(name)s: %(message)s")  # fmt: skip


# ---- check ----------------------------------------------------------------------------------
def cmd_check(args: argparse.Namespace) -> int:
    config = load(args)
    if config is None:
        return 2
    print(describe(config))
    problems = host_problems(config)
    print("\n# host")
    for line in host_report(config):
        print(f"# {line}")
    for problem in problems:
        print(f"appliance: {problem}", file=sys.stderr)
    return 1 if problems else 0


def host_report(config: Config) -> list[str]:
    from workers.pinning import discover_gpus, plan_slots

    slots = plan_slots(config.workers, config.gateway_cores)
    return [
        f"cpus available: {sorted(os.sched_getaffinity(0))}",
        f"gpus: {discover_gpus() or 'none'}",
        f"memory available: {psutil.virtual_memory().available / 2**30:.1f} GiB",
        f"/dev/shm free: {shm_free() / 2**20:.0f} MiB, rings need {shm_needed(config, len(slots)) / 2**20:.0f} MiB",
        *(f"worker {s.index}: {s.role}, cores {list(s.cores)}, gpu {s.gpu}" for s in slots),
    ]


def host_problems(config: Config) -> list[str]:
    from workers.pinning import plan_slots

    problems = []
    needed = shm_needed(config, len(plan_slots(config.workers, config.gateway_cores)))
    if shm_free() < needed:
        problems.append(f"/dev/shm has {shm_free() / 2**20:.0f} MiB free but the rings need "
                        f"{needed / 2**20:.0f} MiB (lower ring_bytes or workers, or enlarge /dev/shm)")  # fmt: skip
    for model in config.models:
        try:
            path = resolve_model_path(model.path, config.state_dir)
        except FileNotFoundError as exc:
            problems.append(f"model {model.name!r}: {exc}")
            continue
        if not path.is_dir():
            hint = " (run `appliance models distill`, or `make serve` which does)" if model.kind == "static" else ""
            problems.append(f"model {model.name!r}: directory {path} does not exist{hint}")
    return problems


def shm_free() -> int:
    try:
        return shutil.disk_usage("/dev/shm").free
    except OSError:
        return 0


def shm_needed(config: Config, workers: int) -> int:
    return workers * (2 * config.ring_bytes + 4096)


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


# ---- serve ----------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    config = load(args)
    if config is None:
        return 2
    configure_logging(config.log_level)
    problems = host_problems(config)
    if problems:
        for problem in problems:
            log.error("%s", problem)
        return 1
    import uvloop

    return uvloop.run(serve(config))


async def serve(config: Config) -> int:
    """Start workers, open the port, serve until a signal, then drain and stop cleanly."""
    from aiohttp import web

    from appliance.guards import MemoryGuard
    from appliance.ipc.channel import sweep_stale_segments
    from appliance.supervisor import BootError, Supervisor
    from gateway.admission import Admission, KeysFileError
    from gateway.app import build_app
    from gateway.caching import CachingBackend
    from gateway.preload import PreloadError, preload, read_preload_file
    from gateway.router import Router
    from workers.pinning import plan_slots

    guard = MemoryGuard(config.memory_floor)
    try:  # a bad preload or keys file fails now, not after loading models; never as open access
        queries = read_preload_file(config.preload_file)
        admission = Admission.from_config(config, guard)
    except (PreloadError, KeysFileError) as exc:
        log.error("cannot start: %s", exc)
        return 2
    removed = sweep_stale_segments()
    if removed:
        log.warning("removed %d shared-memory segment(s) left by a crashed run: %s", len(removed), removed)
    slots = plan_slots(config.workers, config.gateway_cores)
    channels: list[Any] = []
    router = Router(config, len(slots), send=lambda w, record: channels[w].send_request(record))
    supervisor = Supervisor(config, slots, router)
    channels.extend(h.channel for h in supervisor.handles)
    stop = install_signals(supervisor)
    try:
        await start_workers(supervisor, stop)
    except BootError as exc:
        log.error("cannot start: %s", exc)
        await supervisor.stop(0)
        return 1
    if stop.is_set():
        await supervisor.stop(config.shutdown_grace)
        return 0
    backend = CachingBackend(config, router)  # admission -> cache -> coalesce -> route
    await preload(backend, queries, stop.is_set)  # before the port opens: ready means preloaded
    guard.start()  # samples on its own timer; requests only read `guard.low`
    # handler_cancellation: a client that disconnects cancels its handler, and the router then
    # withdraws its parts from the workers (aiohttp >= 3.9 leaves handlers running by default)
    runner = web.AppRunner(build_app(config, backend, admission), access_log=None,
                           shutdown_timeout=config.shutdown_grace, handler_cancellation=True)  # fmt: skip
    await runner.setup()
    # What start-up allocated (modules, config, the preloaded cache) is never garbage: moved out
    # of the collector's reach, a full collection walks only what requests allocate and stops
    # being a multi-millisecond pause in the latency tail.
    gc.freeze()
    await web.TCPSite(runner, config.host, config.port).start()
    print(f"appliance serving {', '.join(m.name for m in config.models)} on http://{config.host}:{config.port}",
          flush=True)  # fmt: skip
    sdnotify.notify("READY=1")
    supervising = asyncio.create_task(supervisor.run())
    watchdog = asyncio.create_task(ping_watchdog())
    await stop.wait()
    code = await shutdown(config, router, runner, supervisor, [supervising, watchdog])
    await guard.stop()
    return code


async def start_workers(supervisor: Any, stop: asyncio.Event) -> None:
    starting = asyncio.create_task(supervisor.start())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not starting.done():
        starting.cancel()
        return
    starting.result()


async def shutdown(config: Config, router: Any, runner: Any, supervisor: Any, tasks: list[asyncio.Task[Any]]) -> int:
    """SIGTERM -> not ready -> stop accepting -> drain in flight -> stop workers -> unlink."""
    log.info("shutting down: draining for up to %.0fs", config.shutdown_grace)
    sdnotify.notify("STOPPING=1")
    router.draining = True
    await runner.cleanup()  # closes the listener, then waits for running handlers (shutdown_timeout)
    await router.wait_idle(config.shutdown_grace)
    for task in tasks:
        task.cancel()
    await supervisor.stop(config.shutdown_grace)
    log.info("stopped cleanly")
    return 0


def install_signals(supervisor: Any) -> asyncio.Event:
    """First SIGTERM/SIGINT: graceful drain. Second: kill the workers and leave at once."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)  # record; the serve coroutine acts on the event
        if len(received) == 1:
            stop.set()
            return
        log.warning("second signal: stopping now")
        supervisor.kill_all()
        supervisor.close()
        os._exit(1)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    return stop


async def ping_watchdog() -> None:
    interval = sdnotify.watchdog_interval()
    while interval:
        sdnotify.notify("WATCHDOG=1")
        await asyncio.sleep(interval)


if __name__ == "__main__":
    sys.exit(main())
