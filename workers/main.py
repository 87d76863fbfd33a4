"""A worker process: one device slot, its models, one channel to the gateway.

Started by the supervisor as ``python -m workers.main '<WorkerSpec JSON>'`` with the channel's
eventfds inherited (``pass_fds``). Boot order matters:

1. pin the process (CUDA_VISIBLE_DEVICES, CPU affinity) *before* torch is imported,
2. attach the channel, load and warm up every model of its role, send ``Ready``,
3. loop: drain the request ring -> tokenize -> batch -> forward -> one result record per request.

A boot failure exits with ``EXIT_BOOT_ERROR``, a model that will not load with
``EXIT_LOAD_ERROR``, so the supervisor stops respawning instead of cycling forever.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

import msgspec

from appliance import protocol
from appliance.protocol import EXIT_BOOT_ERROR, EXIT_LOAD_ERROR, EXIT_OK, WorkerSpec

log = logging.getLogger("appliance.worker")


def main(argv: list[str]) -> int:
    spec = parse_spec(argv)
    configure_logging(spec)
    try:
        from workers import pinning

        slot = pinning.Slot(spec.worker, spec.role, tuple(spec.cores), spec.gpu)
        pinning.apply_in_child(slot)  # order matters: before torch is imported
        install_signal_handlers()
        from appliance.ipc.channel import Channel

        channel = Channel.attach(spec.channel)
        import torch  # noqa: F401  (first import, after pinning)

        pinning.apply_torch_threads(slot)
    except Exception:
        log.exception("worker %d: boot failed", spec.worker)
        return EXIT_BOOT_ERROR
    from workers.loop import WorkerLoop
    from workers.models import load_models

    models = load_models(spec)
    if models is None:
        return EXIT_LOAD_ERROR
    loop = WorkerLoop(spec, channel, models)
    try:
        return loop.run()
    finally:
        channel.close()


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


def install_signal_handlers() -> None:
    # Ctrl-C in a terminal reaches the whole process group; the supervisor decides when a
    # worker stops (it sends Drain), so the worker ignores SIGINT and treats SIGTERM as Drain.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _record_sigterm)


_signals: list[int] = []


def _record_sigterm(signum: int, _frame: object) -> None:
    _signals.append(signum)  # handlers only record; the loop acts


def sigterm_received() -> bool:
    return bool(_signals)


if __name__ == "__main__":
    code = main(sys.argv[1:])
    logging.shutdown()
    # os._exit: torch's and tokenizers' thread pools can stall interpreter teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else EXIT_OK)

__all__ = ["main", "protocol", "sigterm_received"]
