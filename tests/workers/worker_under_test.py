"""A real worker process on a real shared-memory channel, as the worker tests drive one: the
test plays the gateway's side of the channel (``WorkerUnderTest``), and ``running_worker`` kills
the process and removes the channel however the test ends."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import msgspec

from appliance.config import ModelConfig
from appliance.ipc.channel import Channel
from appliance.protocol import Bye, Failed, RequestCodec, ResponseCodec, Scores, Vectors, WorkerSpec

REQUESTS, RESPONSES = RequestCodec(), ResponseCodec()


class WorkerUnderTest:
    def __init__(self, spec: WorkerSpec, channel: Channel, process: subprocess.Popen[bytes]) -> None:
        self.spec, self.channel, self.process = spec, channel, process
        self.loop = asyncio.new_event_loop()
        self.inbox: list[object] = []
        self.channel.start_reader(self.loop, lambda records: self.inbox.extend(map(RESPONSES.decode, records)))

    def send(self, message: object) -> None:
        assert self.channel.send_request(REQUESTS.encode(message))

    def wait_for(self, kind: type, timeout: float = 60.0, **fields: object) -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, message in enumerate(self.inbox):
                if isinstance(message, kind) and all(getattr(message, k) == v for k, v in fields.items()):
                    return self.inbox.pop(i)
            assert self.process.poll() is None or kind is Bye, f"worker exited with {self.process.returncode}"
            self.loop.run_until_complete(asyncio.sleep(0.01))
        raise AssertionError(f"no {kind.__name__} {fields} within {timeout}s; got {self.inbox}")

    def answer_order(self, ids: set[int], timeout: float = 120.0) -> list[int]:
        """The ids of the answers to ``ids`` in the order they came, once all have come."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = [m.id for m in self.inbox if isinstance(m, (Vectors, Scores, Failed)) and m.id in ids]
            if set(seen) == ids:
                return seen
            assert self.process.poll() is None, f"worker exited with {self.process.returncode}"
            self.loop.run_until_complete(asyncio.sleep(0.01))
        raise AssertionError(f"not every one of {sorted(ids)} answered within {timeout}s; got {self.inbox}")

    def stop_reading(self) -> None:
        self.channel.stop_reader()
        self.loop.close()


WORKER = [sys.executable, "-m", "workers.main"]
def worker_spec(channel: Channel, models: list[ModelConfig], role: str, tmp_path: Path, parent_pid: int,
                cores: list[int] | None = None, borrows: bool = False) -> WorkerSpec:  # fmt: skip
    """``cores``: the slot's (default: every core this process may use); ``borrows``: it may be
    lent idle cores, as with ``lend_idle_cores``."""
    cores = sorted(os.sched_getaffinity(0)) if cores is None else cores
    return WorkerSpec(worker=0 if role == "primary" else 1, role=role, cores=cores,
                      gpu=None, channel=channel.spec, models=models, state_dir=str(tmp_path),
                      max_batch_tokens=4096, max_batch_size=32, parent_pid=parent_pid,
                      stats_interval_s=0.2, borrows_cores=borrows)  # fmt: skip


@contextmanager
def running_worker(models: list[ModelConfig], role: str, tmp_path: Path, command: list[str] = WORKER,
                   parent_pid: int | None = None, cores: list[int] | None = None,
                   borrows: bool = False) -> Iterator[WorkerUnderTest]:  # fmt: skip
    """A worker process on a fresh channel (``command`` + its spec JSON); killed, and its channel
    removed, however the test ends."""
    channel = Channel.create(1 << 20)
    process: subprocess.Popen[bytes] | None = None
    try:
        spec = worker_spec(channel, models, role, tmp_path, os.getpid() if parent_pid is None else parent_pid, cores,
                           borrows)  # fmt: skip
        with open(tmp_path / f"worker-{role}.log", "wb") as log:
            process = subprocess.Popen([*command, msgspec.json.encode(spec).decode()],
                                       pass_fds=channel.pass_fds, stdin=subprocess.DEVNULL, stderr=log)  # fmt: skip
        worker = WorkerUnderTest(spec, channel, process)
        try:
            yield worker
        finally:
            worker.stop_reading()
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)
        channel.close()
        channel.unlink()
