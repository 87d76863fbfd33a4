"""A fake worker for tests/appliance/test_supervisor.py: a fresh interpreter on a real channel
that speaks the worker protocol and plays a scripted part instead of loading models.

    python _fake_worker.py <dir> <WorkerSpec JSON>

``<dir>/plan.json`` maps each slot to one mode per incarnation; the last mode repeats, so
``{"0": ["exit1", "ready"]}`` crashes once and then serves. The modes:

    ready            Ready, heartbeat, Stats every STATS_S; Drain or SIGTERM -> Bye, exit 0
    silent           Ready and one beat, then hangs (no heartbeat, no answers)
    silent_at_start  hangs before Ready, never beats
    loading          beats as a loading worker does, but never gets to Ready
    exit<N>          exits with code N at once (1: a crash, 3: boot error, 4: load error)

A ``ready`` worker reports the models its role loads (the primary every configured one, a light
worker the main one). ``<dir>/batches-<slot>``, when present, is taken (renamed away) by the first
ready incarnation of that slot that finds it, which then reports that many batches in its
``Stats``. When ``<dir>/report-blas`` exists, every incarnation notes ``blas=<n>``: the thread
count of numpy's BLAS pool, which numpy sized as this fake's first imports loaded it, before any
code of the fake ran. Every incarnation appends ``<slot> <incarnation> <pid> <event>`` lines to
``<dir>/log``.
Whatever happens, a fake exits once its parent is gone or after LIFETIME_S.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's packages first

import msgspec  # noqa: E402

from appliance.ipc.channel import Channel  # noqa: E402
from appliance.protocol import EXIT_OK, EXIT_PARENT_GONE, Bye, Drain, ModelInfo, Ready  # noqa: E402
from appliance.protocol import RequestCodec, ResponseCodec, Stats, WorkerCounters, WorkerSpec  # noqa: E402

STATS_S = 0.1
BEAT_S = 0.05
LIFETIME_S = 60.0
EXIT_LIFETIME = 9  # ran out of LIFETIME_S: the test that started us is gone or stuck


class Fake:
    def __init__(self, state: Path, spec: WorkerSpec) -> None:
        self.state, self.spec = state, spec
        self.incarnation = self.count_incarnations()
        plan = json.loads((state / "plan.json").read_text())[str(spec.worker)]
        self.mode: str = plan[min(self.incarnation, len(plan) - 1)]
        self.born = time.monotonic()
        self.sigterm = False
        self.channel: Channel | None = None
        self.responses = ResponseCodec()
        self.requests = RequestCodec()

    def count_incarnations(self) -> int:
        log = self.state / "log"
        lines = log.read_text().splitlines() if log.exists() else []
        return sum(1 for line in lines if line.split()[0] == str(self.spec.worker) and line.endswith(" start"))

    def note(self, event: str) -> None:
        line = f"{self.spec.worker} {self.incarnation} {os.getpid()} {event}\n"
        fd = os.open(self.state / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line.encode())  # one small O_APPEND write: lines never interleave
        finally:
            os.close(fd)

    def run(self) -> int:
        self.note("start")
        if (self.state / "report-blas").exists():
            self.note(f"blas={blas_threads()}")
        if self.mode.startswith("exit"):
            return int(self.mode[len("exit") :])
        signal.signal(signal.SIGTERM, self.on_sigterm)
        self.channel = Channel.attach(self.spec.channel)
        try:
            return self.play()
        finally:
            self.channel.close()

    def on_sigterm(self, _signum: int, _frame: object) -> None:
        self.sigterm = True  # handlers only record; the loop acts

    def play(self) -> int:
        if self.mode == "silent_at_start":
            return self.hang()
        if self.mode == "loading":
            return self.hang(beating=True)
        self.send(self.ready())
        self.note("ready")
        assert self.channel is not None
        self.channel.beat()
        if self.mode == "silent":
            return self.hang()
        assert self.mode == "ready", f"unknown mode {self.mode!r}"
        return self.serve()

    def ready(self) -> Ready:
        held = [m for m in self.spec.models if self.spec.role == "primary" or m.main]
        models = [ModelInfo(m.name, m.kind, 8, 128) for m in held]
        return Ready(self.spec.worker, os.getpid(), models, self.spec.role)

    def serve(self) -> int:
        assert self.channel is not None
        batches = self.take_batches()
        next_stats = time.monotonic()
        while (code := self.should_quit()) is None:
            self.channel.beat()
            if time.monotonic() >= next_stats:
                self.send(Stats(self.spec.worker, os.getpid(), WorkerCounters(batches=batches)))
                next_stats += STATS_S
            drains = [r for r in self.channel.wait_requests(BEAT_S) if isinstance(self.requests.decode(r), Drain)]
            if drains or self.sigterm:
                self.note("drain")
                self.send(Bye(self.spec.worker, "drained"))
                self.note("bye")
                return EXIT_OK
        return code

    def take_batches(self) -> int:
        path = self.state / f"batches-{self.spec.worker}"
        taken = path.with_name(f"{path.name}.taken-{os.getpid()}")
        try:
            path.rename(taken)  # atomic: exactly one incarnation gets it
        except FileNotFoundError:
            return 0
        return int(taken.read_text())

    def hang(self, beating: bool = False) -> int:
        while (code := self.should_quit()) is None:
            if beating:
                assert self.channel is not None
                self.channel.beat()
            time.sleep(BEAT_S)
        return code

    def should_quit(self) -> int | None:
        if os.getppid() != self.spec.parent_pid:
            return EXIT_PARENT_GONE
        if time.monotonic() - self.born > LIFETIME_S:
            return EXIT_LIFETIME
        return None

    def send(self, message: object) -> None:
        assert self.channel is not None
        if not self.channel.send_response(self.responses.encode(message)):
            raise RuntimeError(f"response ring full: cannot send {type(message).__name__}")


def blas_threads() -> int:
    """numpy's BLAS pool size, as threadpoolctl reads it from the loaded library."""
    from threadpoolctl import threadpool_info

    sizes = {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}
    assert len(sizes) == 1, f"expected numpy's one BLAS library: {threadpool_info()}"
    return sizes.pop()


def main(argv: list[str]) -> int:
    spec = msgspec.json.decode(argv[1], type=WorkerSpec)
    return Fake(Path(argv[0]), spec).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
