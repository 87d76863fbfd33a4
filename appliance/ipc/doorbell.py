"""Waking the other side: eventfd doorbells, and how long to spin before sleeping on one.

Each direction of a ``Channel`` has a ring and a doorbell. A consumer drains until empty, spins
briefly, parks (``Ring.park``), re-checks the ring and only then sleeps on its eventfd. A
producer rings the eventfd only when the park word says parked, once per park
(``Doorbell.ring_if_parked``): a consumer that keeps up costs its producer no syscall. The
response doorbell also carries the worker's room signal (``Doorbell.ring``, see ``channel.py``).

Why a sleep is bounded. Parking and the producer's check form a Dekker pattern: the consumer
stores "parked" then loads the tail, the producer stores the tail then loads the park word. Each
needs its store visible before its load, which even x86 does not promise without a full fence (a
load may pass an earlier store), and Python cannot issue one: both sides can read the old value,
and the wake-up is lost. So the first sleep of a park is bounded by ``RESCUE_S`` (a few ms), the most a lost
wake-up can cost, and a wake-up by timeout that finds data is counted as a rescue.

Why only the first sleep of a park is that short. The race exists only while the park store is
on its way to the producer: a record published once it is visible finds the consumer parked and
rings. A consumer that woke by timeout with nothing to read stays parked (same park word) and
sleeps ``IDLE_RESCUE_S`` at a time from then on, so an idle side wakes ten times a second, not
five hundred (``python -m bench at-rest`` on the 2-core dev VM: an idle appliance's three
processes woke 1,442 times a second between them before this, 62 after). A wake-up that finds
records ends the park; the next park is a new word and a new race, covered by a short sleep
again. eventfd counts coalesce and may be stale (a ring for a park that already ended): a
wake-up is only a hint to drain, re-check and loop.

Why spins yield. Every spin yields the core on each poll (``os.sched_yield``): on a 2-core box a
hot spin starves the very producer it waits for. A yield that took long means another task wanted
the core; spinning on would queue us behind it for a whole time slice, while a sleeper woken by a
doorbell is scheduled promptly, so the spin stops there (``yield_was_contended``). ``SpinPolicy``
stops spinning where spins catch nothing (a slow model, a busy core) and resumes when records come
fast again. On the 2-core dev VM a round trip between two spinning sides took 9-12 us, one where
the gateway slept on its eventfd and was woken, ~35 us: the wake-up is what spins save.
"""

from __future__ import annotations

import os
import select
import time

SPIN_S = 100e-6  # long enough to catch the gateway's next request in a request/response loop
RESCUE_S = 0.002  # the most a lost wake-up can cost
IDLE_RESCUE_S = 0.1  # later sleeps of a park that found nothing: no race is left to lose
CONTENDED_YIELD_S = 20e-6  # an idle core yields in ~1 us; longer means someone else ran


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

    def ring(self) -> None:
        """Ring whatever the park word says: for news the other side waits on outside its ring
        (``Channel``'s room signal), which is rare enough that a syscall each time is nothing."""
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


def new_eventfd() -> int:
    """A doorbell's fd: non-blocking, close-on-exec (a worker inherits it only via ``pass_fds``)."""
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


def require_eventfd(fd: int) -> None:
    """Fail early and clearly when the spawner forgot ``pass_fds`` (eventfds are close-on-exec)."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except FileNotFoundError:
        target = "not open"
    if target != "anon_inode:[eventfd]":
        raise OSError(f"fd {fd} is {target}, not an inherited eventfd: start this process with "
                      "subprocess.Popen(..., pass_fds=channel.pass_fds)")  # fmt: skip


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


def yield_was_contended(since: float, limit: float) -> bool:
    """Yield the core (never a hot spin); True if another task ran meanwhile.

    On a busy core each further yield queues a spinner behind the other task for a whole time
    slice, while a sleeper woken by a doorbell is scheduled promptly: time to park instead.
    """
    os.sched_yield()
    return time.monotonic() - since > limit
