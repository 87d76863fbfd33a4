"""A worker process: one device slot, its models, one channel to the gateway.

Started by the supervisor as ``python -m workers.main '<WorkerSpec JSON>'`` with the channel's
eventfds inherited (``pass_fds``). Boot order matters:

1. tie the process's life to the gateway's (``liveness.die_with_parent``), then check that the
   gateway is still the parent: one that died before the tie is not covered by it,
2. ``attach``: pin the process (CUDA_VISIBLE_DEVICES, CPU affinity) *before* torch is imported,
   record SIGTERM (``signals``), attach the channel; from here a ``BootHeartbeat`` beats while
   the worker starts torch and loads, since a load can outlast the supervisor's ``worker_timeout``,
3. ``serve``: start torch on the slot, load and warm up every model of its role (``models``), stop
   the boot heartbeat, then hand over to the serving loop (``loop``), which sends ``Ready``, beats
   on its own and drains the request ring -> tokenize -> batch -> forward -> one result record per
   request.

A boot failure exits with ``EXIT_BOOT_ERROR``, a model that will not load with
``EXIT_LOAD_ERROR``, so the supervisor stops respawning instead of cycling forever; a gateway gone
before the worker started, with ``EXIT_PARENT_GONE``.
"""

from __future__ import annotations

import logging
import os
import sys

import msgspec

from appliance import logs
from appliance.ipc.channel import Channel
from appliance.protocol import EXIT_BOOT_ERROR, EXIT_LOAD_ERROR, EXIT_OK, EXIT_PARENT_GONE, WorkerSpec
from appliance.slots import Slot
from workers import compile_cache, liveness, pinning, signals

log = logging.getLogger("appliance.worker")


def main(argv: list[str]) -> int:
    tied = liveness.die_with_parent()  # first: a gateway that dies from here on takes us with it
    spec = parse_spec(argv)
    configure_logging(spec)
    if not tied:
        log.warning("worker %d: cannot ask to die with the gateway on %s", spec.worker, sys.platform)
    if spec.parent_pid and os.getppid() != spec.parent_pid:  # it died before the tie held
        log.error("worker %d: gateway (pid %d) exited before we started", spec.worker, spec.parent_pid)
        return EXIT_PARENT_GONE
    try:
        channel = attach(spec)
    except Exception:
        log.exception("worker %d: boot failed", spec.worker)
        return EXIT_BOOT_ERROR
    try:
        with liveness.BootHeartbeat(channel) as heartbeat:
            return serve(spec, channel, heartbeat)
    finally:
        channel.close()  # order matters: after the heartbeat thread has stopped writing to it


def attach(spec: WorkerSpec) -> Channel:
    """Pin the process, keep compiled artefacts under state_dir, install the signal record, attach
    the channel."""
    pinning.apply_in_child(slot_of(spec), borrows=spec.borrows_cores)  # order matters: before torch is imported
    compile_cache.use(spec.state_dir)  # order matters: inductor reads the cache switches when torch imports it
    signals.install()
    return Channel.attach(spec.channel)


def start_torch(spec: WorkerSpec) -> None:
    import torch  # noqa: F401  (first import, after pinning)

    pinning.apply_torch_threads(slot_of(spec))


def serve(spec: WorkerSpec, channel: Channel, heartbeat: liveness.BootHeartbeat) -> int:
    """Start torch, load this role's models, then run the serving loop (which sends Ready) until
    it exits."""
    try:
        start_torch(spec)
    except Exception:
        log.exception("worker %d: boot failed", spec.worker)
        return EXIT_BOOT_ERROR
    # imported only now: the runtimes pull in torch, which must start after pinning
    from workers.loop import WorkerLoop
    from workers.models import load_models

    models = load_models(spec)
    if models is None:
        return EXIT_LOAD_ERROR
    loop = WorkerLoop(spec, channel, models)
    heartbeat.stop()  # order matters: Channel.beat is a read-modify-write; the loop beats from here on
    return loop.run()


def slot_of(spec: WorkerSpec) -> Slot:
    return Slot(spec.worker, spec.role, tuple(spec.cores), spec.gpu)


def parse_spec(argv: list[str]) -> WorkerSpec:
    if len(argv) != 1:
        print("usage: python -m workers.main '<WorkerSpec JSON>'", file=sys.stderr)
        sys.exit(EXIT_BOOT_ERROR)
    try:
        return msgspec.json.decode(argv[0], type=WorkerSpec)
    except msgspec.ValidationError as exc:
        print(f"worker: invalid spec: {exc}", file=sys.stderr)
        sys.exit(EXIT_BOOT_ERROR)


def configure_logging(spec: WorkerSpec) -> None:
    """The gateway's format (handed down in the environment), so its stderr and ours, which is
    the same file, read alike."""
    logs.configure(spec.log_level, logs.format_from_env(), process=f"worker-{spec.worker}")


if __name__ == "__main__":
    code = main(sys.argv[1:])
    logging.shutdown()
    # os._exit: torch's and tokenizers' thread pools can stall interpreter teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else EXIT_OK)
