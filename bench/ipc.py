"""`python -m bench ipc`: gateway<->worker round trips over the shm channel, a Pipe and a Queue.

One request of ~200 B out, one 1,536 B response (384 float32) back, between two processes:

* ``ring``:  ``appliance.ipc.channel.Channel``, the real path on both sides: the gateway sends
  with ``send_request`` and gets responses through ``start_reader`` (uvloop ``add_reader``)
  resolving futures; the peer is a fresh interpreter started with ``pass_fds`` that loops on
  ``wait_requests`` / ``send_response`` like a worker.
* ``pipe``:  ``multiprocessing.Pipe`` with the same uvloop loop (``add_reader`` on its fileno).
* ``queue``: two ``multiprocessing.Queue``s, blocking ``get`` on the gateway side (its best case).

Two figures per design: latency (one round trip at a time: median and p99) and throughput
(``--window`` round trips in flight, round trips per second). Rounds alternate between the
designs, rotating which goes first, so machine noise hits all three alike. A table, then one
JSON line (the last line) with at least ``ring_median_us``, ``pipe_median_us``,
``queue_median_us``, ``ring_rps``, ``pipe_rps``, ``queue_rps``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Protocol

import msgspec
import uvloop

from appliance.ipc.channel import Channel
from appliance.protocol import ChannelSpec

REQUEST_BYTES = 200
RESPONSE_BYTES = 1536
SEQ_BYTES = 8
REQUEST_FILL = bytes(range(REQUEST_BYTES - SEQ_BYTES))
RESPONSE_FILL = bytes(i % 251 for i in range(RESPONSE_BYTES - SEQ_BYTES))
STOP = b""  # the peers' "exit now" record
PEER_TIMEOUT_S = 10.0


def request(seq: int) -> bytes:
    return seq.to_bytes(SEQ_BYTES, "little") + REQUEST_FILL


def answer(record: bytes) -> bytes:
    """What every peer sends back: the request's sequence number, then the vector bytes."""
    return record[:SEQ_BYTES] + RESPONSE_FILL


def seq_of(record: bytes) -> int:
    if len(record) != RESPONSE_BYTES:
        raise AssertionError(f"response of {len(record)} bytes, expected {RESPONSE_BYTES}")
    return int.from_bytes(record[:SEQ_BYTES], "little")


# ---- peers (the "worker" processes) -----------------------------------------------------
def ring_peer(spec_json: str) -> int:
    """A worker's loop, reduced to answering: the same worker-side API a real worker uses."""
    channel = Channel.attach(msgspec.json.decode(spec_json, type=ChannelSpec))
    parent = os.getppid()
    try:
        while True:
            records = channel.wait_requests(1.0)
            for record in records:
                if record == STOP:
                    print(json.dumps(channel.stats), flush=True)  # the worker side's counters
                    return 0
                channel.send_response(answer(record))
            if not records and os.getppid() != parent:
                return 1
    finally:
        channel.close()


def pipe_peer(conn: Connection) -> None:
    while (record := conn.recv_bytes()) != STOP:
        conn.send_bytes(answer(record))


def queue_peer(requests: Any, responses: Any) -> None:
    while (record := requests.get()) != STOP:
        responses.put(answer(record))


# ---- gateway sides --------------------------------------------------------------------------
class Design(Protocol):
    name: str

    async def latency(self, first: int, trips: int) -> list[int]: ...

    async def throughput(self, first: int, trips: int, window: int) -> float: ...

    def stop(self) -> None: ...


class FutureDesign:
    """Gateway side shared by ring and pipe: one future per request, resolved by a loop reader."""

    name = ""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiters: dict[int, asyncio.Future[bytes]] = {}

    def send(self, record: bytes) -> None:
        raise NotImplementedError

    def resolve(self, record: bytes) -> None:
        self.waiters.pop(seq_of(record)).set_result(record)

    async def latency(self, first: int, trips: int) -> list[int]:
        samples = []
        for seq in range(first, first + trips):
            start = time.perf_counter_ns()
            future = self.loop.create_future()
            self.waiters[seq] = future
            self.send(request(seq))
            await future
            samples.append(time.perf_counter_ns() - start)
        return samples

    async def throughput(self, first: int, trips: int, window: int) -> float:
        in_flight: deque[asyncio.Future[bytes]] = deque()
        start = time.perf_counter()
        for seq in range(first, first + trips):
            if len(in_flight) >= window:
                await in_flight.popleft()
            future = self.loop.create_future()
            self.waiters[seq] = future
            self.send(request(seq))
            in_flight.append(future)
        for future in in_flight:
            await future
        return time.perf_counter() - start


class RingDesign(FutureDesign):
    name = "ring"

    def __init__(self, loop: asyncio.AbstractEventLoop, ring_bytes: int) -> None:
        super().__init__(loop)
        self.channel = Channel.create(ring_bytes)
        argv = [sys.executable, "-m", "bench.ipc", "--peer", msgspec.json.encode(self.channel.spec).decode()]
        self.process = subprocess.Popen(argv, pass_fds=self.channel.pass_fds, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, text=True)  # fmt: skip
        self.channel.start_reader(loop, self.on_records)
        self.worker_stats: dict[str, int] = {}

    def on_records(self, records: list[bytes]) -> None:
        for record in records:
            self.resolve(record)

    def send(self, record: bytes) -> None:
        if not self.channel.send_request(record):
            raise RuntimeError("request ring full: raise --ring-bytes or lower --window")

    def stop(self) -> None:
        self.channel.send_request(STOP)
        try:
            out, _ = self.process.communicate(timeout=PEER_TIMEOUT_S)
            self.worker_stats = json.loads(out) if out.strip() else {}
        finally:
            self.process.kill()
            self.channel.stop_reader()
            self.channel.close()
            self.channel.unlink()


class PipeDesign(FutureDesign):
    name = "pipe"

    def __init__(self, loop: asyncio.AbstractEventLoop, context: Any) -> None:
        super().__init__(loop)
        self.conn, child = context.Pipe()
        self.process = context.Process(target=pipe_peer, args=(child,), daemon=True)
        self.process.start()
        child.close()
        loop.add_reader(self.conn.fileno(), self.on_readable)

    def on_readable(self) -> None:
        try:
            record = self.conn.recv_bytes()
        except (EOFError, OSError) as exc:  # the peer died: fail the waiters, stop reading
            self.loop.remove_reader(self.conn.fileno())
            for future in self.waiters.values():
                future.set_exception(RuntimeError(f"pipe peer gone: {exc!r}"))
            self.waiters.clear()
            return
        self.resolve(record)

    def send(self, record: bytes) -> None:
        self.conn.send_bytes(record)

    def stop(self) -> None:
        self.loop.remove_reader(self.conn.fileno())
        if self.process.is_alive():
            self.conn.send_bytes(STOP)
        self.process.join(PEER_TIMEOUT_S)
        self.process.kill()
        self.conn.close()


class QueueDesign:
    """Blocking put/get in the gateway thread: no event loop in the way, Queue's best case."""

    name = "queue"

    def __init__(self, context: Any) -> None:
        self.requests, self.responses = context.Queue(), context.Queue()
        self.process = context.Process(target=queue_peer, args=(self.requests, self.responses), daemon=True)
        self.process.start()
        self.expected = 0

    def receive(self) -> None:
        seq = seq_of(self.responses.get(timeout=PEER_TIMEOUT_S))
        if seq != self.expected:
            raise AssertionError(f"queue answered request {seq}, expected {self.expected}")
        self.expected += 1

    async def latency(self, first: int, trips: int) -> list[int]:
        self.expected = first
        samples = []
        for seq in range(first, first + trips):
            start = time.perf_counter_ns()
            self.requests.put(request(seq))
            self.receive()
            samples.append(time.perf_counter_ns() - start)
        return samples

    async def throughput(self, first: int, trips: int, window: int) -> float:
        self.expected = first
        start = time.perf_counter()
        for seq in range(first, first + trips):
            if seq - self.expected >= window:
                self.receive()
            self.requests.put(request(seq))
        while self.expected < first + trips:
            self.receive()
        return time.perf_counter() - start

    def stop(self) -> None:
        self.requests.put(STOP)
        self.process.join(PEER_TIMEOUT_S)
        self.process.kill()
        for queue in (self.requests, self.responses):
            queue.close()
            queue.join_thread()


# ---- the run ------------------------------------------------------------------------------
class Tally:
    def __init__(self) -> None:
        self.samples_ns: list[int] = []
        self.trips = 0
        self.seconds = 0.0

    def summary(self) -> dict[str, float]:
        ordered = sorted(self.samples_ns)
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        return {
            "median_us": statistics.median(ordered) / 1000,
            "p99_us": p99 / 1000,
            "rps": self.trips / self.seconds,
        }


@dataclass
class Results:
    tallies: dict[str, Tally]
    rounds: int = 0
    ring_stats: dict[str, int] = field(default_factory=dict)
    ring_worker_stats: dict[str, int] = field(default_factory=dict)
    next_seq: int = 0  # every request in the run has its own sequence number

    def seqs(self, trips: int) -> int:
        first, self.next_seq = self.next_seq, self.next_seq + trips
        return first


async def run(args: argparse.Namespace) -> Results:
    loop = asyncio.get_running_loop()
    context = multiprocessing.get_context("spawn")
    ring = RingDesign(loop, args.ring_bytes)
    designs: list[Design] = [ring, PipeDesign(loop, context), QueueDesign(context)]
    results = Results({d.name: Tally() for d in designs})
    try:
        for design in designs:  # warm-up (imports, page faults, caches): not counted
            await measure(design, Tally(), results, min(200, args.latency_trips), min(1000, args.throughput_trips),
                          args.window)  # fmt: skip
        started = time.monotonic()
        while more_rounds(results.rounds, time.monotonic() - started, args):
            shift = results.rounds % len(designs)  # rotate who goes first
            for design in designs[shift:] + designs[:shift]:
                tally = results.tallies[design.name]
                await measure(design, tally, results, args.latency_trips, args.throughput_trips, args.window)
            results.rounds += 1
        results.ring_stats = ring.channel.stats
    finally:
        for design in designs:
            design.stop()
    results.ring_worker_stats = ring.worker_stats
    return results


async def measure(design: Design, tally: Tally, results: Results, latency_trips: int, throughput_trips: int,
                  window: int) -> None:  # fmt: skip
    tally.samples_ns += await design.latency(results.seqs(latency_trips), latency_trips)
    tally.seconds += await design.throughput(results.seqs(throughput_trips), throughput_trips, window)
    tally.trips += throughput_trips


def more_rounds(done: int, elapsed: float, args: argparse.Namespace) -> bool:
    if args.rounds:
        return done < args.rounds
    return done == 0 or elapsed < args.seconds


def report(results: Results, args: argparse.Namespace) -> dict[str, Any]:
    figures = {name: tally.summary() for name, tally in results.tallies.items()}
    print(f"ipc round trips, {REQUEST_BYTES} B request / {RESPONSE_BYTES} B response, {results.rounds} "
          f"interleaved rounds of {args.latency_trips} sequential + {args.throughput_trips} windowed "
          f"(window {args.window}) per design, {os.cpu_count()} CPUs")  # fmt: skip
    print(f"{'design':<8}{'median_us':>12}{'p99_us':>12}{'round_trips/s':>16}")
    for name, f in figures.items():
        print(f"{name:<8}{f['median_us']:>12.1f}{f['p99_us']:>12.1f}{f['rps']:>16,.0f}")
    ring, pipe, queue = figures["ring"], figures["pipe"], figures["queue"]
    summary: dict[str, Any] = {f"{n}_{k}": round(v, 2) for n, f in figures.items() for k, v in f.items()}
    summary |= {
        "ring_vs_pipe_median": round(ring["median_us"] / pipe["median_us"], 3),
        "ring_vs_pipe_rps": round(ring["rps"] / pipe["rps"], 3),
        "ring_vs_queue_rps": round(ring["rps"] / queue["rps"], 3),
        "rounds": results.rounds,
        "ring_stats": results.ring_stats,
        "ring_worker_stats": results.ring_worker_stats,
    }
    print(f"ring vs pipe: median x{summary['ring_vs_pipe_median']}, throughput x{summary['ring_vs_pipe_rps']}; "
          f"ring vs queue: throughput x{summary['ring_vs_queue_rps']}")  # fmt: skip
    print(json.dumps(summary))
    return summary


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench ipc", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measure for about this long (default 10)")
    parser.add_argument("--rounds", type=int, default=0, help="exactly this many rounds (overrides --seconds)")
    parser.add_argument("--latency-trips", type=int, default=2000, help="sequential round trips per round")
    parser.add_argument("--throughput-trips", type=int, default=20000, help="windowed round trips per round")
    parser.add_argument("--window", type=int, default=64, help="round trips in flight for throughput")
    parser.add_argument("--ring-bytes", type=int, default=1 << 20, help="bytes per ring")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    results = uvloop.run(run(args))
    report(results, args)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--peer"]:
        sys.exit(ring_peer(sys.argv[2]))
    sys.exit(main(sys.argv[1:]))
