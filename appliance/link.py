"""The gateway side of every worker's channel: the one owner of the worker link.

::

    Router ──── send(w, Embed | Rerank | Cancel) ──┐
    Supervisor ─ send(w, Drain) ───────────────────┤
                                                   ▼
                      WorkerLink ── encode ──▶ channels[w].requests  ──▶ worker w
                      WorkerLink ◀─ decode ─── channels[w].responses ◀── worker w
                           │
                           ├─ Vectors | Scores | Failed ─▶ Router.worker_result
                           ├─ Ready | Stats | Bye ───────▶ Supervisor (and Stats to the Router)
                           ├─ Room ──────────────────────▶ Router.worker_room (senders retry)
                           └─ RingCorrupted ─────────────▶ Supervisor (replaces the worker)

Both codecs live here and nowhere else on the gateway side. ``subscribe`` says who hears which
message type; each worker's response ring has one reader (``listen``) that decodes each record
and calls the subscribers of its type in the order they subscribed. A response ring found corrupt
stops its reader and is reported once to the subscribers of ``RingCorrupted``. Room in a request
ring that a send had found full (the worker's room signal, ``appliance/ipc/channel.py``) goes to
the subscribers of ``Room``, an event of the channel (in process, never on a ring). The
composition root (``appliance/cli.py``) builds the link and hands it to the router and the
supervisor.

Lifecycle: constructing a link allocates nothing. ``open`` creates one channel (a ``/dev/shm``
segment and two eventfds) per worker slot; ``close`` stops every reader, closes and unlinks every
segment, and may be called any number of times, also after a failed ``open``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, TypeVar

from appliance.ipc.channel import Channel
from appliance.ipc.ring import RingCorrupted
from appliance.protocol import ChannelSpec, Request, RequestCodec, Response, ResponseCodec, Room

log = logging.getLogger("appliance.link")

M = TypeVar("M")
Handler = Callable[[int, Any], None]  # (worker index, decoded message)


ROOM = Room()  # the one event of its kind: it carries nothing


class LinkClosed(RuntimeError):
    """The link is not open (before ``open`` or after ``close``)."""


class WorkerLink:
    def __init__(self, ring_bytes: int, workers: int) -> None:
        self.ring_bytes = ring_bytes
        self.workers = workers
        self.channels: list[Channel] = []
        self.requests = RequestCodec()
        self.responses = ResponseCodec()
        self._handlers: dict[type, tuple[Handler, ...]] = {}

    # ---- lifecycle ---------------------------------------------------------------------
    def open(self) -> None:
        """One channel per worker slot; on any failure, the ones already made are removed."""
        if self.channels:
            return
        try:
            for _ in range(self.workers):
                self.channels.append(Channel.create(self.ring_bytes))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop every reader, close and unlink every segment. Idempotent."""
        channels, self.channels = self.channels, []
        for channel in channels:
            channel.close()  # also stops its reader
            channel.unlink()

    @property
    def is_open(self) -> bool:
        return bool(self.channels)

    def channel(self, worker: int) -> Channel:
        if not self.channels:
            raise LinkClosed("the worker link is not open")
        return self.channels[worker]

    def spec(self, worker: int) -> ChannelSpec:
        return self.channel(worker).spec

    def pass_fds(self, worker: int) -> tuple[int, ...]:
        return self.channel(worker).pass_fds

    # ---- gateway -> worker -------------------------------------------------------------
    def encode(self, message: Request) -> bytes:
        return self.requests.encode(message)

    def send(self, worker: int, message: Request) -> bool:
        """Encode and publish; False when the worker's request ring is full (never blocks)."""
        return self.send_record(worker, self.requests.encode(message))

    def send_record(self, worker: int, record: bytes) -> bool:
        """Publish an already encoded request (a part resent to another worker keeps its bytes)."""
        return self.channel(worker).send_request(record)

    # ---- worker -> gateway -------------------------------------------------------------
    def subscribe(self, kind: type[M], handler: Callable[[int, M], None]) -> None:
        """Call ``handler(worker, message)`` for every message of type ``kind``."""
        self._handlers[kind] = (*self._handlers.get(kind, ()), handler)

    def listen(self, worker: int) -> None:
        """Deliver ``worker``'s responses from the running event loop (doorbell + rescue timer)."""
        loop = asyncio.get_running_loop()
        self.channel(worker).start_reader(loop, lambda records: self.dispatch(worker, records),
                                          lambda error: self.corrupted(worker, error),
                                          lambda: self.room(worker))  # fmt: skip

    def room(self, worker: int) -> None:
        """``worker``'s request ring has room again after a refused send: tell who subscribed."""
        for handler in self._handlers.get(Room, ()):
            handler(worker, ROOM)

    def corrupted(self, worker: int, error: RingCorrupted) -> None:
        """The reader found ``worker``'s response ring corrupt and stopped: tell who subscribed."""
        log.error("worker %d: response ring corrupt, reader stopped: %s", worker, error)
        for handler in self._handlers.get(RingCorrupted, ()):
            handler(worker, error)

    def flush(self, worker: int) -> None:
        """A worker died: stop its reader and deliver what it finished before it went (nothing
        past a corrupt record: ``reset`` drops it)."""
        channel = self.channel(worker)
        channel.stop_reader()
        try:
            records = channel.poll_responses()
        except RingCorrupted:
            records = []  # reported already, when the reader found it
        self.dispatch(worker, records)

    def reset(self, worker: int) -> None:
        """Empty both rings for the worker's successor (after ``flush``)."""
        self.channel(worker).reset()

    def dispatch(self, worker: int, records: list[bytes]) -> None:
        decode, handlers = self.responses.decode, self._handlers
        for record in records:
            try:
                message: Response = decode(record)
                for handler in handlers.get(type(message), ()):
                    handler(worker, message)
            except Exception:  # one bad record or handler bug must not lose the records behind it
                log.exception("worker %d: cannot handle a %d-byte response record", worker, len(record))

    # ---- liveness ----------------------------------------------------------------------
    def heartbeat(self, worker: int) -> int:
        """The worker's heartbeat word: it moves while the worker is alive and looping."""
        return self.channel(worker).heartbeat()
