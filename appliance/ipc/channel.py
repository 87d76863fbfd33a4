"""A worker's channel: two shared-memory rings and two eventfd doorbells in one segment.

The worker link (``appliance/link.py``) creates one channel per worker (``Channel.create``); the
supervisor starts the worker with ``subprocess.Popen([...], pass_fds=channel.pass_fds)`` and
``channel.spec`` as JSON on its command line; the worker calls ``Channel.attach(spec)``. The parts live in their own modules:

* ``segment.py``: the ``/dev/shm`` file, its layout and header, the sweep after a crash;
* ``ring.py``: one direction's records (framing, publication, memory ordering);
* ``doorbell.py``: the eventfds, park/ring, why every sleep is bounded and why spins yield;
* ``loop_reader.py``: the gateway side's reader on the event loop (``LoopReader``, a base of ``Channel``).

This module pairs them and drives the two sides. A consumer drains, spins briefly, parks,
re-checks and sleeps on its doorbell; a producer publishes, then rings only a parked consumer.

The gateway side never blocks: its reader (``start_reader``, ``loop_reader.py``) hooks the
response eventfd into the event loop, with a rescue timer and a spin window after each send.

The worker side blocks, always with a timeout: ``wait_requests`` spins with yields, then parks
and sleeps on the request doorbell, ``rescue_s`` first and ``idle_rescue_s`` at a time once a
sleep found nothing (``doorbell.py``); ``send_response`` naps while the ring is full.

The room signal. A full request ring makes ``send_request`` return False, and the gateway's
senders wait (``gateway/router.py``). So that they wait no longer than the worker takes to drain,
a refused send sets the request ring's room word (``Ring.want_room``); the worker, after any drain
that took records, finds it set, clears it and rings the *response* doorbell (``Doorbell.ring``:
the gateway listens on that eventfd already, and a record on the full-or-not response ring could
not always be written). The gateway, woken, sees the request ring's head past the one its refused
write saw and calls ``on_room``. A drain that finds the word clear costs one load: no syscall is
added per record or per drain. The Dekker race of parking applies here too (the gateway stores the
word then loads the head; the worker stores the head then loads the word): both may miss the
other's store, so the gateway's rescue timer also compares the head (``room_rescues``), and a lost
room signal costs at most ``rescue_s``, like a lost wake-up.
"""

from __future__ import annotations

import os
import time

from appliance.ipc.doorbell import CONTENDED_YIELD_S, IDLE_RESCUE_S, RESCUE_S, SPIN_S, Doorbell, SpinPolicy
from appliance.ipc.doorbell import new_eventfd, require_eventfd, yield_was_contended
from appliance.ipc.loop_reader import LoopReader
from appliance.ipc.ring import Ring
from appliance.ipc.segment import HEADER_BYTES, HEARTBEAT_WORD, Segment, check_header, format_header
from appliance.protocol import ChannelSpec

# This side's event counters, reported by ``Channel.stats`` with sent/received records,
# doorbells rung, refused writes (full) and invalid reads.
COUNTERS = (
    "wakeups",  # sleeps ended by a doorbell
    "rescues",  # sleeps ended by the timeout that found data: lost wake-ups, caught
    "spurious",  # doorbells that found nothing (coalesced or stale counts)
    "full_waits",  # send_response calls that had to wait for room
    "spins_cut",  # worker spins abandoned because another task wanted the core
    "spin_catches",  # gateway polls that found responses inside a spin window
    "room_rung",  # worker: room signals rung (it drained a request ring the gateway had found full)
    "room_signals",  # gateway: request-ring room seen on a doorbell
    "room_rescues",  # gateway: request-ring room found by the rescue timer (a lost room signal)
)


class Channel(LoopReader):
    """Two rings and two doorbells in one segment; see the module doc for who calls what."""

    def __init__(self, segment: Segment, spec: ChannelSpec, *, init: bool, checked: bool | None = None) -> None:
        self.spec = spec
        self.spin_s = SPIN_S
        self.rescue_s = RESCUE_S
        self.idle_rescue_s = IDLE_RESCUE_S
        self.contended_yield_s = CONTENDED_YIELD_S
        self._segment = segment
        region = Ring.region_bytes(spec.ring_bytes)
        view = segment.view
        # The layout drawn in segment.py: the header's two lines, then the rings back to back.
        self._views = [view[:HEADER_BYTES], view[HEADER_BYTES : HEADER_BYTES + 2 * region]]
        self._header = self._views[0].cast("Q")
        rings: list[Ring] = []
        try:
            if init:
                format_header(self._header, spec.ring_bytes)
            else:
                check_header(self._header, spec.name, spec.ring_bytes)
            for start in (0, region):
                rings.append(Ring(self._views[1][start : start + region], spec.ring_bytes, init=init, checked=checked))
        except BaseException:
            for ring in rings:
                ring.release()
            self._release_views()
            raise
        self.requests, self.responses = rings
        self._request_bell = Doorbell(spec.request_fd)
        self._response_bell = Doorbell(spec.response_fd)
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._sent = 0  # hot counters live outside the dict
        self._received = 0
        self._spin_policy = SpinPolicy()
        self._init_reader()
        self._closed = False

    # ---- lifecycle ---------------------------------------------------------------------
    @classmethod
    def create(cls, ring_bytes: int, *, checked: bool | None = None) -> "Channel":
        """Supervisor side: a fresh segment (mode 0600, pid-tagged random name) and eventfds."""
        segment = Segment.create(cls.segment_bytes(ring_bytes))
        fds: list[int] = []
        try:
            fds = [new_eventfd() for _ in range(2)]
            return cls(segment, ChannelSpec(segment.name, ring_bytes, fds[0], fds[1]), init=True, checked=checked)
        except BaseException:
            for fd in fds:
                os.close(fd)
            segment.close()
            segment.unlink()
            raise

    @classmethod
    def attach(cls, spec: ChannelSpec) -> "Channel":
        """Worker side: map the creator's segment and adopt the inherited eventfds."""
        for fd in (spec.request_fd, spec.response_fd):
            require_eventfd(fd)
        segment = Segment.attach(spec.name, cls.segment_bytes(spec.ring_bytes))
        try:
            return cls(segment, spec, init=False)
        except BaseException:
            segment.close()
            raise

    @staticmethod
    def segment_bytes(ring_bytes: int) -> int:
        return HEADER_BYTES + 2 * Ring.region_bytes(ring_bytes)

    @property
    def pass_fds(self) -> tuple[int, ...]:
        """The eventfds a worker must inherit (they are close-on-exec otherwise)."""
        return (self.spec.request_fd, self.spec.response_fd)

    @property
    def creator(self) -> bool:
        return self._segment.creator

    @property
    def path(self) -> str:
        return Segment.path_of(self.spec.name)

    def close(self) -> None:
        """Detach: stop the reader, drop every view, unmap, close the eventfds. Never unlinks."""
        if self._closed:
            return
        self._closed = True
        self.stop_reader()
        self.requests.release()
        self.responses.release()
        self._release_views()
        self._segment.close()
        self._request_bell.close()
        self._response_bell.close()

    def _release_views(self) -> None:
        self._header.release()
        for view in self._views:
            view.release()

    def unlink(self) -> None:
        """Creator only: remove the segment's name (mappings stay valid until closed)."""
        if not self.creator:
            raise RuntimeError("only the process that created a channel unlinks it")
        self._segment.unlink()

    def __enter__(self) -> "Channel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        if self.creator:
            self.unlink()

    # ---- gateway side ------------------------------------------------------------------
    def send_request(self, record: bytes) -> bool:
        """Publish a request; False when the ring is full (back-pressure). Never blocks."""
        if not self.requests.try_write(record):
            self._want_room()
            return False
        self._sent += 1
        self._request_bell.ring_if_parked(self.requests.park_word)
        if self._spin_handle is None and self._loop is not None:
            self._open_spin_window()
        return True

    def poll_responses(self) -> list[bytes]:
        """Non-blocking drain of the response ring (e.g. what a dead worker finished)."""
        records = self.responses.drain()
        self._received += len(records)
        return records

    def heartbeat(self) -> int:
        return self._header[HEARTBEAT_WORD]

    def reset(self) -> None:
        """After the worker died: empty both rings, clear parked flags and stale doorbell counts."""
        self.requests.reset()
        self.responses.reset()
        for bell in (self._request_bell, self._response_bell):
            bell.clear()
            bell.last_rung = 0
        self._room_head = -1  # the worker that was to make room is gone; its successor starts empty

    # ---- worker side -------------------------------------------------------------------
    def poll_requests(self) -> list[bytes]:
        return self._count_received(self.requests.drain())

    def wait_requests(self, timeout: float) -> list[bytes]:
        """Requests, blocking up to ``timeout`` s: [] only when none came. Spins, then sleeps."""
        ring = self.requests
        records = ring.drain()
        if records or timeout <= 0:
            return self._count_received(records)
        start = time.monotonic()
        deadline = start + timeout
        spun = self._spin_policy.allow()
        if spun and self._spin(ring, deadline):
            records = ring.drain()
        while not records and deadline > time.monotonic():
            records = self._sleep(ring, deadline)
        if records and not spun and time.monotonic() - start <= self.spin_s:
            self._spin_policy.would_have_caught()
        return self._count_received(records)

    def _spin(self, ring: Ring, deadline: float) -> bool:
        """Yielding polls for up to ``spin_s``; True as soon as a record is published."""
        now = time.monotonic()
        until = min(deadline, now + self.spin_s)
        while now < until:
            if yield_was_contended(now, self.contended_yield_s):
                self._counts["spins_cut"] += 1
                caught = ring.pending()
                self._spin_policy.record(caught, contended=True)
                return caught
            if ring.pending():
                self._spin_policy.record(True)
                return True
            now = time.monotonic()
        self._spin_policy.record(False)
        return False

    def _sleep(self, ring: Ring, deadline: float) -> list[bytes]:
        """Park and sleep until a record comes or ``deadline``: ``rescue_s`` first (the park's
        race), then ``idle_rescue_s`` at a time, parked throughout (``doorbell.py``)."""
        ring.park()
        # order matters: re-check after parking (Dekker); a record published before the
        # producer could see the park store would otherwise wait for the timeout.
        if ring.pending():
            ring.unpark()
            records = ring.drain()
            if not records:
                os.sched_yield()  # published but not visible yet: let the stores land
            return records
        nap = self.rescue_s
        while (remaining := deadline - time.monotonic()) > 0:
            rung = self._request_bell.wait(min(nap, remaining))
            records = ring.drain()
            if records:
                ring.unpark()
                self._counts["wakeups" if rung else "rescues"] += 1
                return records
            if rung:
                self._counts["spurious"] += 1
            # rung for nothing: a stale count, or (checked mode) a record not yet valid, which
            # will not ring again for this park: look again soon
            nap = self.rescue_s if rung else self.idle_rescue_s
        ring.unpark()
        return []

    def _count_received(self, records: list[bytes]) -> list[bytes]:
        if records:
            self._received += len(records)
            # order matters: after the drain stored the head, so the gateway woken sees the room
            if self.requests.take_room_request():
                self._response_bell.ring()
                self._counts["room_rung"] += 1
        return records

    def send_response(self, record: bytes, timeout: float = 5.0) -> bool:
        """Publish a result; while the ring is full, wait (sleeping) up to ``timeout`` s."""
        ring = self.responses
        if not ring.try_write(record) and not self._wait_for_room(ring, record, timeout):
            return False
        self._sent += 1
        self._response_bell.ring_if_parked(ring.park_word)
        return True

    def _wait_for_room(self, ring: Ring, record: bytes, timeout: float) -> bool:
        # The gateway frees space on its own schedule and rings nothing back: short naps,
        # growing to rescue_s, are cheap and rare (a full response ring means a stalled gateway).
        if timeout <= 0:
            return False
        self._counts["full_waits"] += 1
        deadline = time.monotonic() + timeout
        nap = 50e-6
        while (remaining := deadline - time.monotonic()) > 0:
            time.sleep(min(nap, remaining))
            nap = min(2 * nap, self.rescue_s)
            if ring.try_write(record):
                return True
        return False

    def beat(self) -> None:
        """Worker: prove liveness (the supervisor replaces a worker whose heartbeat stalls)."""
        self._header[HEARTBEAT_WORD] = self._header[HEARTBEAT_WORD] + 1

    # ---- both ----------------------------------------------------------------------------
    @property
    def stats(self) -> dict[str, int]:
        """This side's counters: doorbells rung, wake-ups, rescues, full rings, ..."""
        return {
            "sent": self._sent,
            "received": self._received,
            **self._counts,
            "doorbells": self._request_bell.rung + self._response_bell.rung,
            "full": self.requests.full_events + self.responses.full_events,
            "invalid_reads": self.requests.invalid_reads + self.responses.invalid_reads,
            "request_bytes_used": 0 if self._closed else self.requests.used_bytes(),
            "response_bytes_used": 0 if self._closed else self.responses.used_bytes(),
        }

    def __repr__(self) -> str:
        side = "creator" if self.creator else "attached"
        return f"Channel({self.spec.name}, {self.spec.ring_bytes} B rings, {side})"
