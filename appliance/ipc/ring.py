"""A single-producer/single-consumer byte ring in shared memory.

One process writes records, another reads them, through a buffer both have mapped (the
``Channel`` puts two of these in one segment, one per direction). The ring knows nothing about
doorbells or processes; it only frames bytes and publishes them safely.

Memory layout (offsets from the start of the region; every counter alone on a 64-byte line so
the producer's and the consumer's stores never share a cache line)::

      0 +-------------------------------------------+
        | capacity u64 | flags u64 (bit 0: checked) |  line 0  written once, by the creator
     64 +-------------------------------------------+
        | tail u64   bytes ever published           |  line 1  producer writes, consumer reads
        | room u64   1: the producer found it full  |          producer sets, consumer clears
    128 +-------------------------------------------+
        | head u64   bytes ever consumed            |  line 2  consumer writes, producer reads
    192 +-------------------------------------------+
        | park u64   park sequence << 1 | parked    |  line 3  consumer writes, producer reads
    256 +-------------------------------------------+
        | data: ``capacity`` bytes of records        |
        +-------------------------------------------+

    record at data offset p (p % 8 == 0):
        [ length u32 | check u32 ][ payload: length bytes ][ zero..7 pad bytes to 8 ]
    wrap marker (the record did not fit before the end; it starts at offset 0):
        [ 0xFFFFFFFF | check u32 ]

``head`` and ``tail`` only ever grow (2**64 bytes is centuries at memory speed); a record's data
offset is ``counter % capacity`` and the counter at which it starts is its *stamp*. ``tail - head``
is the number of bytes in use, so "full" and "empty" never look alike. A record never wraps, and
one larger than half the ring (header included) is refused with ``RecordTooLarge``: anything up to
half fits even in an empty ring whose free space is split by the end, so a writer can never wait
forever on a record that cannot fit. Full means ``try_write`` returns False: back-pressure, never
an overwrite.

The two header fields of a record are one 8-byte word: ``check`` is ``fold(stamp)`` in plain mode
and ``crc32(payload, fold(stamp))`` in checked mode, where ``fold(s) = (s ^ s >> 32) & 0xFFFFFFFF``.

Why a reader never accepts a half-written record
------------------------------------------------
The producer stores payload -> header word -> tail; the consumer loads tail -> header word ->
payload, copies the payload out and only then stores head. Every counter and header word is one
aligned 8-byte store or load (a ``memoryview`` cast to ``"Q"`` packs with an 8-byte ``memcpy``,
one ``mov``/``str``), which both x86-64 and aarch64 perform single-copy atomically, so a reader
sees an old or a new value, never a mix. Program order between the steps survives compilation:
each is a separate trip through the interpreter, with opaque calls in between.

* x86-64 (TSO) keeps stores in order with stores and loads in order with loads, and never lets
  a store overtake an earlier load. So once the consumer sees the new tail it sees the header
  and payload stored before it, and the producer cannot reuse space until the consumer's copy
  is done. (glibc's non-temporal ``memcpy`` for huge copies ends with ``sfence``.) Plain mode.
* aarch64 is weakly ordered and Python can issue no barrier; a syscall is not one either (the
  kernel's own ``membarrier`` says "system call entry is not a mb"). So on any CPU other than
  x86 the ring runs in **checked mode**: the reader recomputes ``crc32(payload, fold(head))`` on
  its private copy and accepts the record only if it equals the header word. A stale header
  from an earlier lap carries another stamp, a stale or half-visible payload another CRC; either
  way the reader reports "not yet" and retries, and coherence makes the real stores visible
  within nanoseconds. The head store is control-dependent on that comparison, which depends on
  every payload byte loaded, and aarch64 never makes a store visible before the branch it depends
  on resolves: the producer cannot overwrite bytes the reader is still copying. The producer's
  payload stores in turn depend (control) on its load of head. Residual risk: a torn record
  whose CRC collides, 2**-32 per torn read, themselves a nanosecond window.

The creator picks the mode (``checked=None``: by CPU) and stores it in ``flags``, so both sides
agree. A record that stays invalid for ``corrupt_after_s`` is no race but a bug or a foreign
writer: ``RingCorrupted``.

The park word is the consumer's "I am asleep, ring my doorbell" flag (``Channel`` uses it); each
park bumps the sequence so a producer can ring once per sleep, not once per record.

The room word is the other way round: the producer's "I found you full, tell me when you took
something" flag. A refused ``try_write`` remembers the head it saw (``full_head``); the producer
then sets the word (``want_room``), and the consumer, after a drain that moved the head, clears it
and says so (``take_room_request``; ``Channel`` rings a doorbell). It sits on the tail's line, which
the consumer loads on every drain anyway, so checking it costs no extra cache miss, and both sides
write it only around a full ring. Set and clear race without a lock, harmlessly: a clear that
overwrites a newer set is followed by the consumer's doorbell, after which the producer looks at
the head again and sets the word again if it is still full.
"""

from __future__ import annotations

import platform
import time
import zlib

LINE = 64
RECORD_HEADER = 8
WRAP = 0xFFFFFFFF
MASK32 = 0xFFFFFFFF
FLAG_CHECKED = 1
CORRUPT_AFTER_S = 1.0
MIN_CAPACITY = 32
MAX_CAPACITY = 1 << 32  # record lengths are u32

# Word (u64) indices into the ring header; tests use the byte offsets (index * 8).
CAPACITY_WORD, FLAGS_WORD, TAIL_WORD, ROOM_WORD, HEAD_WORD, PARK_WORD = 0, 1, 8, 9, 16, 24

_STRONGLY_ORDERED = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})


def weakly_ordered_cpu() -> bool:
    """True where stores may become visible out of order (aarch64, ppc64le, riscv64, ...)."""
    return platform.machine().lower() not in _STRONGLY_ORDERED


class RecordTooLarge(ValueError):
    """The record can never fit: it is larger than half the ring (header included)."""

    def __init__(self, size: int, limit: int, capacity: int) -> None:
        self.size, self.limit, self.capacity = size, limit, capacity
        super().__init__(
            f"record of {size} bytes is larger than this ring accepts ({limit} bytes: half of the "
            f"{capacity}-byte ring less the {RECORD_HEADER}-byte record header); raise ring_bytes "
            "or send smaller records"
        )


class RingCorrupted(RuntimeError):
    """A published record stayed invalid far longer than any store takes to become visible."""


class Ring:
    """One direction of a channel: frames, publishes and consumes records (see module doc)."""

    HEADER_BYTES = 4 * LINE
    __slots__ = ("capacity", "checked", "max_payload", "corrupt_after_s", "full_events", "invalid_reads",
                 "full_head", "_header", "_counters", "_data", "_words", "_tail", "_head",
                 "_invalid_since")  # fmt: skip

    @staticmethod
    def region_bytes(capacity: int) -> int:
        """Header plus data bytes, rounded up to a cache line so regions can sit back to back."""
        check_capacity(capacity)
        return -(-(Ring.HEADER_BYTES + capacity) // LINE) * LINE

    def __init__(self, buf: memoryview, capacity: int, *, init: bool, checked: bool | None = None) -> None:
        """Map a ring onto ``buf`` (8-byte aligned). ``init=True`` formats it, once, at creation.

        ``checked`` (only with ``init``) forces checked or plain mode; ``None`` picks by CPU.
        """
        if len(buf) < Ring.region_bytes(capacity):
            raise ValueError(f"buffer of {len(buf)} bytes is smaller than a {capacity}-byte ring needs")
        self._header = buf[: self.HEADER_BYTES]
        self._counters = self._header.cast("Q")
        self._data = buf[self.HEADER_BYTES : self.HEADER_BYTES + capacity]
        self._words = self._data.cast("Q")
        if init:
            self._format(capacity, weakly_ordered_cpu() if checked is None else checked)
        elif self._counters[CAPACITY_WORD] != capacity:
            found = self._counters[CAPACITY_WORD]
            self.release()
            raise ValueError(f"ring header says capacity {found}, expected {capacity}: not this layout")
        self.capacity = capacity
        self.checked = bool(self._counters[FLAGS_WORD] & FLAG_CHECKED)
        self.max_payload = capacity // 2 - RECORD_HEADER
        self.corrupt_after_s = CORRUPT_AFTER_S
        self.full_events = 0  # refused writes (back-pressure), counted by the writing side
        self.invalid_reads = 0  # records seen published but not (yet) valid
        self.full_head = 0  # producer: the head its latest refused write saw (room = head moved past it)
        self._tail = self._counters[TAIL_WORD]  # only the producer stores tail: it may cache it
        self._head = self._counters[HEAD_WORD]  # likewise head for the consumer
        self._invalid_since = 0.0

    def _format(self, capacity: int, checked: bool) -> None:
        self._header[:] = bytes(self.HEADER_BYTES)
        self._counters[FLAGS_WORD] = FLAG_CHECKED if checked else 0
        self._counters[CAPACITY_WORD] = capacity

    # ---- producer ------------------------------------------------------------------------
    def try_write(self, payload: bytes | bytearray | memoryview) -> bool:
        """Publish one record; False when there is no room now (the caller decides how to wait)."""
        if type(payload) is memoryview:
            payload = flat_bytes(payload)
        size = len(payload)
        if size > self.max_payload:
            raise RecordTooLarge(size, self.max_payload, self.capacity)
        need = (size + RECORD_HEADER + 7) & -8
        cap = self.capacity
        tail = self._tail
        pos = tail % cap
        skip = cap - pos if pos + need > cap else 0
        head = self._counters[HEAD_WORD]
        if tail + skip + need - head > cap:
            self.full_events += 1
            self.full_head = head
            return False
        if skip:
            self._words[pos >> 3] = WRAP | ((tail ^ tail >> 32) & MASK32) << 32
            tail += skip
            pos = 0
        self._data[pos + RECORD_HEADER : pos + RECORD_HEADER + size] = payload
        check = (tail ^ tail >> 32) & MASK32
        if self.checked:
            check = zlib.crc32(payload, check)
        # order matters: the header word after the payload, the tail after both (module doc).
        self._words[pos >> 3] = size | check << 32
        tail += need
        self._tail = tail
        self._counters[TAIL_WORD] = tail
        return True

    # ---- consumer ------------------------------------------------------------------------
    def try_read(self) -> bytes | None:
        """The next record, or None when none is published (or visible) yet."""
        records = self.drain(1)
        return records[0] if records else None

    def drain(self, limit: int | None = None) -> list[bytes]:
        """Every published record (up to ``limit``), oldest first; frees their space once."""
        head = self._head
        tail = self._counters[TAIL_WORD]
        records: list[bytes] = []
        if head == tail:
            return records
        stop = -1 if limit is None else limit
        while head != tail and len(records) != stop:
            after = self._take(head, tail, records)
            if after == head:
                break
            head = after
        if head != self._head:
            self._head = head
            # order matters: hand the space back only after every payload was copied out.
            self._counters[HEAD_WORD] = head
        return records

    def _take(self, head: int, tail: int, records: list[bytes]) -> int:
        """Append the record at ``head`` to ``records``; the head after it (``head``: not valid)."""
        cap = self.capacity
        pos = head % cap
        word = self._words[pos >> 3]
        start = head
        if word & MASK32 == WRAP:
            if word >> 32 != (head ^ head >> 32) & MASK32:
                return self._not_valid(start, "stale wrap marker")
            head += cap - pos
            pos = 0
            word = self._words[0]
        size = word & MASK32
        need = (size + RECORD_HEADER + 7) & -8
        if pos + need > cap or head + need > tail:
            return self._not_valid(start, f"length {size} runs past the published data")
        record = self._data[pos + RECORD_HEADER : pos + RECORD_HEADER + size].tobytes()
        check = (head ^ head >> 32) & MASK32
        if self.checked:
            check = zlib.crc32(record, check)
        if word >> 32 != check:
            return self._not_valid(start, "check word does not match")
        records.append(record)
        self._invalid_since = 0.0
        return head + need

    def _not_valid(self, head: int, why: str) -> int:
        # Normal for a few nanoseconds on a weakly ordered CPU (stores still in flight); a bug
        # or a foreign writer if it lasts.
        self.invalid_reads += 1
        now = time.monotonic()
        if not self._invalid_since:
            self._invalid_since = now
        elif now - self._invalid_since > self.corrupt_after_s:
            raise RingCorrupted(f"record at byte {head} still invalid after {self.corrupt_after_s:.1f}s: {why}")
        return head

    # ---- state ---------------------------------------------------------------------------
    def pending(self) -> bool:
        """Consumer's view: something is published past what this side consumed."""
        return self._counters[TAIL_WORD] != self._head

    def is_empty(self) -> bool:
        return self._counters[TAIL_WORD] == self._counters[HEAD_WORD]

    def used_bytes(self) -> int:
        return self._counters[TAIL_WORD] - self._counters[HEAD_WORD]

    @property
    def parked(self) -> bool:
        return bool(self._counters[PARK_WORD] & 1)

    @parked.setter
    def parked(self, value: bool) -> None:
        if value:
            self.park()
        else:
            self.unpark()

    @property
    def park_word(self) -> int:
        """Park sequence << 1 | parked bit: a producer rings once per distinct parked value."""
        return self._counters[PARK_WORD]

    def park(self) -> None:
        """Consumer: about to sleep. Sets the bit and starts a new park sequence."""
        self._counters[PARK_WORD] = (self._counters[PARK_WORD] | 1) + 2

    def unpark(self) -> None:
        self._counters[PARK_WORD] = self._counters[PARK_WORD] & ~1

    @property
    def head(self) -> int:
        """Bytes ever consumed, as the consumer published them."""
        return self._counters[HEAD_WORD]

    @property
    def room_wanted(self) -> bool:
        return bool(self._counters[ROOM_WORD])

    def want_room(self) -> None:
        """Producer: it found the ring full and waits; the consumer is to say when it took records."""
        self._counters[ROOM_WORD] = 1

    def take_room_request(self) -> bool:
        """Consumer, after a drain: True (and the word cleared) when the producer waits for room.

        One load when nobody waits: the common path gains no store and no syscall.
        """
        if not self._counters[ROOM_WORD]:
            return False
        self._counters[ROOM_WORD] = 0
        return True

    def reset(self) -> None:
        """Both sides stopped: drop everything unread, clear the parked bit and the room word.

        The counters move forward (head := tail) instead of back to zero, so no stamp is ever
        reused and a stale record can never pass for a new one.
        """
        tail = self._counters[TAIL_WORD]
        self._counters[HEAD_WORD] = tail
        self._head = self._tail = tail
        self.unpark()
        self._counters[ROOM_WORD] = 0
        self.full_head = 0
        self._invalid_since = 0.0

    def release(self) -> None:
        """Drop every view into the buffer, so its owner can close the mapping."""
        for view in (self._words, self._data, self._counters, self._header):
            view.release()


def check_capacity(capacity: int) -> None:
    if not MIN_CAPACITY <= capacity <= MAX_CAPACITY or capacity % 8:
        raise ValueError(
            f"ring capacity must be a multiple of 8 between {MIN_CAPACITY} and {MAX_CAPACITY} bytes, got {capacity}"
        )


def flat_bytes(view: memoryview) -> memoryview:
    """A 1-D unsigned-byte view of any contiguous buffer (slice assignment needs that shape)."""
    if view.format == "B" and view.ndim == 1:
        return view
    return view.cast("B")
