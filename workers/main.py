"""A worker process: one device slot, its models, one channel to the gateway.

Started by the supervisor as ``python -m workers.main '<WorkerSpec JSON>'`` with the channel's
eventfds inherited (``pass_fds``). Boot order matters:

1. ``boot``: pin the process (CUDA_VISIBLE_DEVICES, CPU affinity) *before* torch is imported,
   record SIGTERM (``signals``), attach the channel,
2. ``serve``: load and warm up every model of its role (``models``), then hand over to the
   serving loop (``loop``), which sends ``Ready`` and then drains the request ring -> tokenize
   -> batch -> forward -> one result record per request.

A boot failure exits with ``EXIT_BOOT_ERROR``, a model that will not load with
``EXIT_LOAD_ERROR``, so the supervisor stops respawning instead of cycling forever.
"""

from __future__ import annotations

import logging
import os
import sys

import msgspec

from appliance.ipc.channel import Channel
from appliance.protocol import EXIT_BOOT_ERROR, EXIT_LOAD_ERROR, EXIT_OK, WorkerSpec
from appliance.slots import Slot
from workers import pinning, signals

log = logging.getLogger("appliance.worker")


def main(argv: list[str]) -> int:
    spec = parse_spec(argv)
    configure_logging(spec)
    try:
        channel = boot(spec)
    except Exception:
        log.exception("worker %d: boot failed", spec.worker)
        return EXIT_BOOT_ERROR
    try:
        return serve(spec, channel)
    finally:
        channel.close()


def boot(spec: WorkerSpec) -> Channel:
    """Pin the process, install the signal record, attach the channel, start torch on the slot."""
    slot = Slot(spec.worker, spec.role, tuple(spec.cores), spec.gpu)
    pinning.apply_in_child(slot)  # order matters: before torch is imported
    signals.install()
    channel = Channel.attach(spec.channel)
    import torch  # noqa: F401  (first import, after pinning)

    pinning.apply_torch_threads(slot)
    return channel


def serve(spec: WorkerSpec, channel: Channel) -> int:
    """Load this role's models, then run the serving loop (which sends Ready) until it exits."""
    # imported only now: the runtimes pull in torch, which must start after pinning
    from workers.loop import WorkerLoop
    from workers.models import load_models

    models = load_models(spec)
    if models is None:
        return EXIT_LOAD_ERROR
    return WorkerLoop(spec, channel, models).run()


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
    logging.basicConfig(
        level=spec.log_level.upper(),
        format=f"%(asctime)s worker-{spec.worker} %(levelname)s %(message)s",
        stream=sys.stderr,
    )


if __name__ == "__main__":
    code = main(sys.argv[1:])
    logging.shutdown()
    # os._exit: torch's and tokenizers' thread pools can stall interpreter teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else EXIT_OK)
