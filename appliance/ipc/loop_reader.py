"""The gateway side's reader of a channel's response ring: it runs on the event loop and never blocks.

``start_reader`` hooks the response eventfd into the event loop (``loop.add_reader``) plus a
periodic rescue timer that delivers what a lost wake-up left behind. The timer ticks every
``rescue_s`` while the reader parks again or waits for room, and backs off to ``idle_rescue_s``
once a tick finds neither since the last one: a park that is older than a tick has no race left to
lose (``doorbell.py``), and an idle gateway then wakes ten times a second per worker, not 500. A
park re-arms the short tick. Its spin is a *spin window*:
after a send (``Channel.send_request`` opens it), one poll of the response ring per loop iteration
for ``spin_s``, unparked, so a fast answer costs neither side a syscall nor a wake-up. A corrupt
response ring stops the reader and goes to ``on_corrupt``.

It also hears the worker's room signal (``channel.py``): after a refused send (``_want_room``),
the first doorbell, or at the latest rescue tick, that finds the request ring's head past the one
the refused write saw calls ``on_room``, once. While no refusal is outstanding that costs one
integer test per doorbell and tick.

``LoopReader`` is a base of ``Channel`` (``channel.py``), which owns the rings, doorbells and
counters it reads; it holds only the reader's own state.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from appliance.ipc.doorbell import Doorbell, SpinPolicy, yield_was_contended
from appliance.ipc.ring import Ring, RingCorrupted


class LoopReader:
    """The event-loop half of ``Channel``; the attributes below are the channel's."""

    requests: Ring
    responses: Ring
    _response_bell: Doorbell
    _counts: dict[str, int]
    _sent: int
    _received: int
    _spin_policy: SpinPolicy
    spin_s: float
    rescue_s: float
    idle_rescue_s: float
    contended_yield_s: float

    def _init_reader(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_records: Callable[[list[bytes]], None] | None = None
        self._on_corrupt: Callable[[RingCorrupted], None] | None = None
        self._on_room: Callable[[], None] | None = None
        self._room_head = -1  # the request ring's head at the latest refused send; -1: nobody waits
        self._rescue_timer: asyncio.TimerHandle | None = None
        self._tick_s = 0.0  # the rescue timer's period now: rescue_s, or idle_rescue_s once idle
        self._parks = 0  # parks since the reader started; a tick compares it with the last one's
        self._tick_parks = 0
        self._spin_handle: asyncio.Handle | None = None
        self._spin_until = 0.0
        self._spin_sent = 0
        self._spin_caught = self._spin_cut = False
        self._unspun_since = 0.0  # first send since the last delivery that opened no window

    def start_reader(self, loop: asyncio.AbstractEventLoop, on_records: Callable[[list[bytes]], None],
                     on_corrupt: Callable[[RingCorrupted], None] | None = None,
                     on_room: Callable[[], None] | None = None) -> None:  # fmt: skip
        """Deliver response records to ``on_records`` from ``loop`` (doorbell + rescue timer), and
        room in the request ring after a refused send to ``on_room``.

        A corrupt response ring stops the reader, once, and goes to ``on_corrupt`` (raised from
        the callback that found it when there is none): polling a ring that stays corrupt would
        raise every ``rescue_s`` and deliver nothing behind the bad record. Only the worker's
        replacement, after ``reset``, makes it readable again.
        """
        self.stop_reader()
        self._loop, self._on_records, self._on_corrupt = loop, on_records, on_corrupt
        self._on_room = on_room
        loop.add_reader(self._response_bell.fd, self._on_doorbell)
        self._arm_rescue(self.rescue_s)
        self._deliver()  # whatever arrived before we listened; also parks

    def stop_reader(self) -> None:
        if self._loop is None:
            return
        loop, self._loop, self._on_records, self._on_corrupt = self._loop, None, None, None
        self._on_room = None
        for handle in (self._rescue_timer, self._spin_handle):
            if handle is not None:
                handle.cancel()
        self._rescue_timer = self._spin_handle = None
        self._spin_until = 0.0
        if not loop.is_closed():
            loop.remove_reader(self._response_bell.fd)
        self.responses.unpark()  # nobody listens: the worker need not ring

    def _on_doorbell(self) -> None:
        if self._response_bell.clear():
            self._counts["wakeups"] += 1
        if self._room_head >= 0:
            self._check_room(rung=True)
        self._deliver()

    def _arm_rescue(self, period: float) -> None:
        assert self._loop is not None
        if self._rescue_timer is not None:
            self._rescue_timer.cancel()
        self._tick_s = period
        self._rescue_timer = self._loop.call_later(period, self._on_rescue_tick)

    def _hurry_rescue(self) -> None:
        """A new park, or a wait for room: the next tick within ``rescue_s``."""
        if self._tick_s > self.rescue_s and self._loop is not None:
            self._arm_rescue(self.rescue_s)

    def _on_rescue_tick(self) -> None:
        quiet = self._parks == self._tick_parks and self._room_head < 0
        self._tick_parks = self._parks
        self._arm_rescue(self.idle_rescue_s if quiet else self.rescue_s)
        if self._room_head >= 0:
            self._check_room(rung=False)
        if self.responses.pending():
            if self._spin_handle is None and not self._response_bell.clear():
                self._counts["rescues"] += 1  # data the doorbell never announced
            self._deliver()

    # ---- room in the request ring ----------------------------------------------------------
    def _want_room(self) -> None:
        """A send found the request ring full: ask the worker to signal when it has taken records."""
        ring = self.requests
        self._room_head = ring.full_head
        ring.want_room()
        self._hurry_rescue()

    def _check_room(self, *, rung: bool) -> None:
        """``on_room`` once the worker's head has moved past the refused write's (module doc)."""
        ring = self.requests
        if ring.head == self._room_head:
            if rung and not ring.room_wanted:
                # The worker's clear, meant for an earlier refusal, landed after this one's set:
                # the ring is still full, so ask again.
                ring.want_room()
            return
        self._room_head = -1
        self._counts["room_signals" if rung else "room_rescues"] += 1
        if self._on_room is not None:
            self._on_room()

    def _deliver(self) -> None:
        ring = self.responses
        if self._spin_handle is None:
            ring.park()
            self._parks += 1
            self._hurry_rescue()
        # order matters: park before draining, so a record published after this drain finds us
        # parked and rings; one racing the park store is the rescue timer's.
        records = self._drain_responses()
        if records and self._unspun_since:
            if time.monotonic() - self._unspun_since <= self.spin_s:
                self._spin_policy.would_have_caught()
            self._unspun_since = 0.0
        self._dispatch(records)

    def _drain_responses(self) -> list[bytes]:
        try:
            return self.responses.drain()
        except RingCorrupted as error:
            on_corrupt = self._on_corrupt
            self.stop_reader()  # no more polls, timers or doorbell reads of this ring
            if on_corrupt is None:
                raise
            on_corrupt(error)
            return []

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
                self._dispatch(self._drain_responses())
            elif yield_was_contended(now, self.contended_yield_s):
                self._spin_until = 0.0  # close the window at the next tick: park, be woken
                self._spin_cut = True
                self._counts["spins_cut"] += 1
            return
        self._spin_handle, self._spin_until = None, 0.0
        self._spin_policy.record(self._spin_caught, contended=self._spin_cut)
        self._deliver()  # parks and re-checks: from here on the doorbell wakes us
