"""A worker's channel: two shared-memory rings and two eventfd doorbells.

The supervisor creates one channel per worker (``Channel.create``) and starts the worker with
``subprocess.Popen([...], pass_fds=channel.pass_fds)`` and ``channel.spec`` as JSON on its
command line; the worker calls ``Channel.attach(spec)``. Segment layout::

      0 +------------------------------------------------------------+
        | magic u64 | version u64 | ring_bytes u64 | creator pid u64 |  line 0, written once
     64 +------------------------------------------------------------+
        | heartbeat u64                                              |  line 1, worker increments
    128 +------------------------------------------------------------+
        | requests ring  (gateway -> worker), Ring.region_bytes      |  see ring.py
        +------------------------------------------------------------+
        | responses ring (worker -> gateway), Ring.region_bytes      |
        +------------------------------------------------------------+

Signalling. A consumer drains until empty, spins briefly, parks (``Ring.park``), re-checks the
ring and only then sleeps on its eventfd. A producer rings the eventfd only when the park word
says parked, once per park. Parking and the producer's check form a Dekker pattern that needs a
full fence Python cannot issue, so a wake-up can be lost: every sleep is bounded by ``rescue_s``
(a few ms) and a wake-up by timeout that finds data is counted in ``stats["rescues"]``. eventfd
counts coalesce and may be stale: a wake-up is only a hint to drain, re-check and loop.

Spinning. Every spin yields the core on each poll (``os.sched_yield``): on a 2-core box a hot
spin starves the very producer it waits for. A yield that took long means another task wanted
the core; spinning on would queue us behind it for a whole time slice, while a sleeper woken by
a doorbell is scheduled promptly, so the spin stops there (``spins_cut``). ``SpinPolicy`` stops
spinning where spins catch nothing (a slow model, a busy core) and resumes when records come
fast again. On the 2-core dev VM a round trip between two spinning sides took 9-12 us, one
where the gateway slept on its eventfd and was woken, ~35 us: the wake-up is what spins save.

The gateway side never blocks: ``start_reader`` hooks the response eventfd into the event loop
(``loop.add_reader``) plus a periodic rescue timer. Its spin is a *spin window*: after a send,
one poll of the response ring per loop iteration for ``spin_s``, unparked, so a fast answer
costs neither side a syscall nor a wake-up. The worker side blocks, always with a timeout.

Segments live in ``/dev/shm`` as ``appl-<creator pid>-<random hex>``, mode 0600, opened with
``os.open`` + ``mmap`` (no ``multiprocessing`` resource tracker: an attaching process could
otherwise unlink the creator's segment when it exits). The creator unlinks at exit; if it is
SIGKILLed, ``sweep_stale_segments()`` at the next start removes segments whose creator is dead.
"""

from __future__ import annotations

import asyncio
import mmap
import os
import re
import secrets
import select
import time
from typing import Callable

import msgspec
import psutil

from appliance.ipc.ring import LINE, Ring
from appliance.protocol import ChannelSpec

SHM_DIR = "/dev/shm"
NAME_PREFIX = "appl-"
NAME_RE = re.compile(r"^appl-(\d+)-([0-9a-f]{16})$")
MAGIC = int.from_bytes(b"APPLCHAN", "little")
VERSION = 1
HEADER_BYTES = 2 * LINE
MAGIC_WORD, VERSION_WORD, RING_BYTES_WORD, PID_WORD, HEARTBEAT_WORD = 0, 1, 2, 3, 8

SPIN_S = 100e-6  # long enough to catch the gateway's next request in a request/response loop
RESCUE_S = 0.002  # the most a lost wake-up can cost
CONTENDED_YIELD_S = 20e-6  # an idle core yields in ~1 us; longer means someone else ran
PID_REUSE_SLACK_S = 2.0  # psutil's process start times are only as exact as the boot time (1 s)

# This side's event counters, reported by ``Channel.stats`` with sent/received records,
# doorbells rung, refused writes (full) and invalid reads.
COUNTERS = (
    "wakeups",  # sleeps ended by a doorbell
    "rescues",  # sleeps ended by the timeout that found data: lost wake-ups, caught
    "spurious",  # doorbells that found nothing (coalesced or stale counts)
    "full_waits",  # send_response calls that had to wait for room
    "spins_cut",  # worker spins abandoned because another task wanted the core
    "spin_catches",  # gateway polls that found responses inside a spin window
)


class Segment:
    """One ``/dev/shm`` file mapped read-write: created 0600 under a pid-tagged name, or attached."""

    def __init__(self, name: str, mapping: mmap.mmap, creator: bool) -> None:
        self.name = name
        self.creator = creator
        self._mapping = mapping
        self.view = memoryview(mapping)

    @staticmethod
    def path_of(name: str) -> str:
        return os.path.join(SHM_DIR, name)

    @classmethod
    def create(cls, size: int) -> "Segment":
        while True:
            name = f"{NAME_PREFIX}{os.getpid()}-{secrets.token_hex(8)}"
            path = cls.path_of(name)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                continue  # 64 random bits collided: draw again
            try:
                os.fchmod(fd, 0o600)  # the umask can only take bits away, but say it outright
                os.ftruncate(fd, size)
                return cls(name, mmap.mmap(fd, size), creator=True)
            except BaseException:
                os.unlink(path)
                raise
            finally:
                os.close(fd)

    @classmethod
    def attach(cls, name: str, min_size: int) -> "Segment":
        if not NAME_RE.match(name):
            raise ValueError(f"{name!r} is not a channel segment name ({NAME_PREFIX}<pid>-<hex>)")
        fd = os.open(cls.path_of(name), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            info = os.fstat(fd)
            if info.st_uid != os.getuid():
                raise PermissionError(f"segment {name} belongs to uid {info.st_uid}, not to us")
            if info.st_size < min_size:
                raise ValueError(f"segment {name} has {info.st_size} bytes, the spec needs {min_size}")
            return cls(name, mmap.mmap(fd, info.st_size), creator=False)
        finally:
            os.close(fd)

    def close(self) -> None:
        self.view.release()
        self._mapping.close()

    def unlink(self) -> None:
        try:
            os.unlink(self.path_of(self.name))
        except FileNotFoundError:
            pass


class Doorbell:
    """An eventfd one side rings and the other sleeps on; counts coalesce (one read drains all)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.rung = 0
        self.last_rung = 0  # producer side: the park word already rung for
        self._poll: select.poll | None = None

    def ring_if_parked(self, park_word: int) -> None:
        # Once per park: a consumer that parked again has a new word and needs a new ring.
        if park_word & 1 and park_word != self.last_rung:
            self.last_rung = park_word
            os.eventfd_write(self.fd, 1)
            self.rung += 1

    def clear(self) -> int:
        """Consume pending rings without blocking; how many there were (0: none)."""
        try:
            return os.eventfd_read(self.fd)
        except BlockingIOError:
            return 0

    def wait(self, timeout: float) -> bool:
        """Sleep until rung or ``timeout`` s (millisecond resolution); True if it was rung."""
        if self._poll is None:
            self._poll = select.poll()
            self._poll.register(self.fd, select.POLLIN)
        return bool(self._poll.poll(timeout * 1000.0)) and self.clear() > 0

    def close(self) -> None:
        os.close(self.fd)


class SpinPolicy:
    """Spin while spinning catches records; back off exponentially while it does not.

    With a slow model, or a core shared with a busy task, spins catch nothing, so after a few
    misses a side spins once in ``MAX_SKIP`` chances: a few microseconds per request at most.
    A record that arrives within the spin time while we did not spin ends the back-off at once
    (traffic got fast again), unless the last spin lost its core to another task.
    """

    MAX_SKIP = 256

    def __init__(self) -> None:
        self.skip = 0
        self.backoff = 0
        self.contended = False

    def allow(self) -> bool:
        if self.skip:
            self.skip -= 1
            return False
        return True

    def record(self, caught: bool, contended: bool = False) -> None:
        self.contended = contended and not caught
        self.backoff = 0 if caught else min(self.MAX_SKIP, 2 * self.backoff or 1)
        self.skip = self.backoff

    def would_have_caught(self) -> None:
        if not self.contended:
            self.skip = self.backoff = 0


class Channel:
    """Two rings and two doorbells in one segment; see the module doc for who calls what."""

    def __init__(self, segment: Segment, spec: ChannelSpec, *, init: bool, checked: bool | None = None) -> None:
        self.spec = spec
        self.spin_s = SPIN_S
        self.rescue_s = RESCUE_S
        self.contended_yield_s = CONTENDED_YIELD_S
        self._segment = segment
        region = Ring.region_bytes(spec.ring_bytes)
        view = segment.view
        self._views = [view[:HEADER_BYTES], view[HEADER_BYTES : HEADER_BYTES + 2 * region]]
        self._header = self._views[0].cast("Q")
        rings: list[Ring] = []
        try:
            self._format_header(spec.ring_bytes) if init else self._check_header(spec.ring_bytes)
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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_records: Callable[[list[bytes]], None] | None = None
        self._rescue_timer: asyncio.TimerHandle | None = None
        self._spin_handle: asyncio.Handle | None = None
        self._spin_until = 0.0
        self._spin_sent = 0
        self._spin_caught = self._spin_cut = False
        self._unspun_since = 0.0  # first send since the last delivery that opened no window
        self._spin_policy = SpinPolicy()
        self._closed = False

    # ---- lifecycle ---------------------------------------------------------------------
    @classmethod
    def create(cls, ring_bytes: int, *, checked: bool | None = None) -> "Channel":
        """Supervisor side: a fresh segment (mode 0600, pid-tagged random name) and eventfds."""
        segment = Segment.create(cls.segment_bytes(ring_bytes))
        fds: list[int] = []
        try:
            fds = [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in range(2)]
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

    def _format_header(self, ring_bytes: int) -> None:
        header = self._header
        header[VERSION_WORD], header[RING_BYTES_WORD], header[PID_WORD] = VERSION, ring_bytes, os.getpid()
        header[MAGIC_WORD] = MAGIC

    def _check_header(self, ring_bytes: int) -> None:
        header = self._header
        found = (header[MAGIC_WORD], header[VERSION_WORD], header[RING_BYTES_WORD])
        if found != (MAGIC, VERSION, ring_bytes):
            raise ValueError(f"segment {self.spec.name} is not a version {VERSION} channel of {ring_bytes}-byte rings")

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
            return False
        self._sent += 1
        self._request_bell.ring_if_parked(self.requests.park_word)
        if self._spin_handle is None and self._loop is not None:
            self._open_spin_window()
        return True

    def start_reader(self, loop: asyncio.AbstractEventLoop, on_records: Callable[[list[bytes]], None]) -> None:
        """Deliver response records to ``on_records`` from ``loop`` (doorbell + rescue timer)."""
        self.stop_reader()
        self._loop, self._on_records = loop, on_records
        loop.add_reader(self._response_bell.fd, self._on_doorbell)
        self._rescue_timer = loop.call_later(self.rescue_s, self._on_rescue_tick)
        self._deliver()  # whatever arrived before we listened; also parks

    def stop_reader(self) -> None:
        if self._loop is None:
            return
        loop, self._loop, self._on_records = self._loop, None, None
        for handle in (self._rescue_timer, self._spin_handle):
            if handle is not None:
                handle.cancel()
        self._rescue_timer = self._spin_handle = None
        self._spin_until = 0.0
        if not loop.is_closed():
            loop.remove_reader(self._response_bell.fd)
        self.responses.unpark()  # nobody listens: the worker need not ring

    def poll_responses(self) -> list[bytes]:
        """Non-blocking drain of the response ring (e.g. what a dead worker finished)."""
        records = self.responses.drain()
        self._received += len(records)
        return records

    def _on_doorbell(self) -> None:
        if self._response_bell.clear():
            self._counts["wakeups"] += 1
        self._deliver()

    def _on_rescue_tick(self) -> None:
        assert self._loop is not None
        self._rescue_timer = self._loop.call_later(self.rescue_s, self._on_rescue_tick)
        if self.responses.pending():
            if self._spin_handle is None and not self._response_bell.clear():
                self._counts["rescues"] += 1  # data the doorbell never announced
            self._deliver()

    def _deliver(self) -> None:
        ring = self.responses
        if self._spin_handle is None:
            ring.park()
        # order matters: park before draining, so a record published after this drain finds us
        # parked and rings; one racing the park store is the rescue timer's.
        records = ring.drain()
        if records and self._unspun_since:
            if time.monotonic() - self._unspun_since <= self.spin_s:
                self._spin_policy.would_have_caught()
            self._unspun_since = 0.0
        self._dispatch(records)

    def _dispatch(self, records: list[bytes]) -> None:
        if records and self._on_records is not None:
            self._received += len(records)
            self._on_records(records)

    def _open_spin_window(self) -> None:
        # A response is often back within microseconds. Polling for it from the loop a moment
        # beats being woken for it: no eventfd write, no cross-CPU wake-up, no eventfd read.
        if self.spin_s <= 0:
            return
        if not self._spin_policy.allow():
            self._unspun_since = self._unspun_since or time.monotonic()
            return
        assert self._loop is not None
        self._spin_caught = self._spin_cut = False
        self._spin_sent = self._sent
        self._spin_until = time.monotonic() + self.spin_s
        self.responses.unpark()  # the worker need not ring while we poll
        self._spin_handle = self._loop.call_soon(self._spin_tick)

    def _spin_tick(self) -> None:
        """One poll per loop iteration while the window is open; other callbacks run between."""
        assert self._loop is not None
        now = time.monotonic()
        if self._sent != self._spin_sent and self._spin_until:
            # More requests since the last tick: keep the window open spin_s past them
            # (measured here, so that a send costs no clock read).
            self._spin_sent, self._spin_until = self._sent, now + self.spin_s
        if now < self._spin_until:
            # Schedule the next poll first: a raising on_records cannot leave the window open
            # forever, and a stop_reader inside it cancels this very handle.
            self._spin_handle = self._loop.call_soon(self._spin_tick)
            if self.responses.pending():
                self._spin_caught = True
                self._counts["spin_catches"] += 1
                self._dispatch(self.responses.drain())
            elif yield_was_contended(now, self.contended_yield_s):
                self._spin_until = 0.0  # close the window at the next tick: park, be woken
                self._spin_cut = True
                self._counts["spins_cut"] += 1
            return
        self._spin_handle, self._spin_until = None, 0.0
        self._spin_policy.record(self._spin_caught, contended=self._spin_cut)
        self._deliver()  # parks and re-checks: from here on the doorbell wakes us

    def heartbeat(self) -> int:
        return self._header[HEARTBEAT_WORD]

    def reset(self) -> None:
        """After the worker died: empty both rings, clear parked flags and stale doorbell counts."""
        self.requests.reset()
        self.responses.reset()
        for bell in (self._request_bell, self._response_bell):
            bell.clear()
            bell.last_rung = 0

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
        while not records and (remaining := deadline - time.monotonic()) > 0:
            records = self._sleep(ring, remaining)
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

    def _sleep(self, ring: Ring, remaining: float) -> list[bytes]:
        ring.park()
        # order matters: re-check after parking (Dekker); a record published before the
        # producer could see the park store would otherwise wait for the timeout.
        if ring.pending():
            ring.unpark()
            records = ring.drain()
            if not records:
                os.sched_yield()  # published but not visible yet: let the stores land
            return records
        rung = self._request_bell.wait(min(self.rescue_s, remaining))
        ring.unpark()
        records = ring.drain()
        if records and not rung:
            self._counts["rescues"] += 1
        elif rung:
            self._counts["wakeups" if records else "spurious"] += 1
        return records

    def _count_received(self, records: list[bytes]) -> list[bytes]:
        self._received += len(records)
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


def yield_was_contended(since: float, limit: float) -> bool:
    """Yield the core (never a hot spin); True if another task ran meanwhile.

    On a busy core each further yield queues a spinner behind the other task for a whole time
    slice, while a sleeper woken by a doorbell is scheduled promptly: time to park instead.
    """
    os.sched_yield()
    return time.monotonic() - since > limit


def require_eventfd(fd: int) -> None:
    """Fail early and clearly when the spawner forgot ``pass_fds`` (eventfds are close-on-exec)."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except FileNotFoundError:
        target = "not open"
    if target != "anon_inode:[eventfd]":
        raise OSError(f"fd {fd} is {target}, not an inherited eventfd: start this process with "
                      "subprocess.Popen(..., pass_fds=channel.pass_fds)")  # fmt: skip


def sweep_stale_segments() -> list[str]:
    """Remove our segments whose creator is dead (a SIGKILLed run); the names removed."""
    removed = []
    for name in sorted(os.listdir(SHM_DIR)):
        match = NAME_RE.match(name)
        if match is None:
            continue
        path = Segment.path_of(name)
        try:
            info = os.stat(path, follow_symlinks=False)
            if info.st_uid != os.getuid() or creator_alive(int(match.group(1)), info.st_ctime):
                continue
            os.unlink(path)
        except FileNotFoundError:
            continue  # another sweeper, or its creator, was faster
        removed.append(name)
    return removed


def creator_alive(pid: int, created: float) -> bool:
    """Is ``pid`` still the process that created a segment at ``created`` (epoch seconds)?"""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        started = process.create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
    # A reused pid belongs to a process started after the creator died, so after the segment.
    return started <= created + PID_REUSE_SLACK_S
