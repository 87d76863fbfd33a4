"""appliance/ipc/ring.py: framing, wrap-around, back-pressure and stale-record rejection."""

from __future__ import annotations

import mmap
import random
import struct
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.ipc.ring import (
    HEAD_WORD,
    LINE,
    RECORD_HEADER,
    ROOM_WORD,
    TAIL_WORD,
    RecordTooLarge,
    Ring,
    RingCorrupted,
)

CAPACITIES = st.integers(min_value=4, max_value=128).map(lambda n: n * 8)  # 32 .. 1,024 bytes


def make_ring(capacity: int, checked: bool = False) -> tuple[bytearray, Ring]:
    buf = bytearray(Ring.region_bytes(capacity))
    return buf, Ring(memoryview(buf), capacity, init=True, checked=checked)


def framed(size: int) -> int:
    return (size + RECORD_HEADER + 7) & -8


# A write is an int (its size, payload drawn from the seeded counter); a read is None.
OPS = st.lists(st.one_of(st.integers(min_value=0, max_value=600), st.none()), max_size=120)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(capacity=CAPACITIES, checked=st.booleans(), ops=OPS)
def test_records_come_back_in_order_byte_for_byte(capacity: int, checked: bool, ops: list[int | None]) -> None:
    _, ring = make_ring(capacity, checked)
    model: deque[bytes] = deque()
    rng = random.Random(capacity)
    for op in ops:
        if op is None:
            assert ring.try_read() == (model.popleft() if model else None)
            continue
        size = op % (ring.max_payload + 1)
        payload = rng.randbytes(size)
        used = ring.used_bytes()
        accepted = ring.try_write(payload)
        grown = ring.used_bytes() - used
        if accepted:
            model.append(payload)
            # the record, plus at most the tail end it skipped to avoid wrapping
            assert framed(size) <= grown < 2 * framed(size)
        else:
            assert grown == 0
            # refused only when even the worst-case skip could have made it not fit
            assert used + 2 * framed(size) - 8 > capacity
        assert 0 <= ring.used_bytes() <= capacity
    assert ring.drain() == list(model)
    assert ring.is_empty() and ring.used_bytes() == 0


@settings(max_examples=100, deadline=None, derandomize=True)
@given(capacity=CAPACITIES, start=st.integers(min_value=0, max_value=1 << 20))
def test_a_half_ring_record_fits_an_empty_ring_anywhere(capacity: int, start: int) -> None:
    _, ring = make_ring(capacity)
    for _ in range(start % (capacity // 8)):  # empty records move head and tail by 8 bytes
        assert ring.try_write(b"") and ring.try_read() == b""
    payload = bytes(range(256)) * (ring.max_payload // 256) + bytes(ring.max_payload % 256)
    assert ring.try_write(payload)
    assert ring.try_read() == payload
    with pytest.raises(RecordTooLarge) as refused:
        ring.try_write(bytes(ring.max_payload + 1))
    assert refused.value.size == ring.max_payload + 1
    assert f"{capacity}-byte ring" in str(refused.value) and "larger than" in str(refused.value)


def test_record_too_large_is_a_value_error_and_leaves_the_ring_untouched() -> None:
    _, ring = make_ring(1024)
    assert ring.max_payload == 512 - RECORD_HEADER
    with pytest.raises(ValueError):
        ring.try_write(bytes(513))
    assert ring.is_empty() and ring.full_events == 0


def test_wrap_marker_restarts_the_record_at_offset_zero() -> None:
    buf, ring = make_ring(128)
    for size in (48, 24):  # 56 + 32 framed bytes: head and tail at 88
        assert ring.try_write(bytes(size)) and ring.try_read() == bytes(size)
    assert ring.try_write(b"x" * 40)  # 48 framed bytes do not fit in the last 40: wrap
    assert ring.used_bytes() == 40 + 48
    data = Ring.HEADER_BYTES
    assert struct.unpack_from("<I", buf, data + 88)[0] == 0xFFFFFFFF
    assert struct.unpack_from("<I", buf, data)[0] == 40 and buf[data + 8 : data + 48] == b"x" * 40
    assert ring.try_read() == b"x" * 40 and ring.is_empty()


def test_full_ring_refuses_and_never_overwrites() -> None:
    _, ring = make_ring(256)
    written = []
    for i in range(100):
        record = bytes([i]) * 20
        if not ring.try_write(record):
            break
        written.append(record)
    assert len(written) == 256 // framed(20)
    assert ring.full_events == 1
    assert ring.drain(limit=2) == written[:2]
    assert ring.try_write(b"late")
    assert ring.drain() == written[2:] + [b"late"]


def test_wraps_thousands_of_times() -> None:
    _, ring = make_ring(4096, checked=True)
    rng = random.Random(7)
    sent: deque[bytes] = deque()
    total = 0
    while total < 2000 * 4096:
        record = rng.randbytes(rng.randrange(ring.max_payload + 1))
        while not ring.try_write(record):
            assert ring.try_read() == sent.popleft()
        sent.append(record)
        total += len(record)
    assert ring.drain() == list(sent)


def test_memoryview_payloads_of_any_format() -> None:
    _, ring = make_ring(512)
    floats = memoryview(struct.pack("<4f", 1.0, 2.0, 3.0, 4.0)).cast("f")
    assert ring.try_write(floats) and ring.try_write(memoryview(b"abc"))
    assert ring.drain() == [floats.tobytes(), b"abc"]


@pytest.mark.parametrize("checked", [False, True])
def test_a_stale_record_from_an_earlier_lap_is_never_accepted(checked: bool) -> None:
    """Simulates a reader that sees the new tail before the producer's record stores."""
    buf, ring = make_ring(64, checked)
    counters = memoryview(buf)[: Ring.HEADER_BYTES].cast("Q")
    for lap in range(2):  # two 32-byte records per lap: a once-valid record stays at offset 0
        assert ring.try_write(bytes([lap]) * 24) and ring.try_write(bytes([lap]) * 24)
        assert len(ring.drain()) == 2
    head = counters[HEAD_WORD]
    assert head % 64 == 0
    counters[TAIL_WORD] = head + 32  # tail published, record stores not visible yet
    assert ring.try_read() is None and ring.invalid_reads == 1
    ring.corrupt_after_s = 0.0
    with pytest.raises(RingCorrupted):  # it never becomes valid: a bug, not a race
        ring.try_read()
    counters.release()


def test_checked_mode_rejects_a_torn_payload_until_it_is_complete() -> None:
    buf, ring = make_ring(256, checked=True)
    assert ring.try_write(b"complete record")
    offset = Ring.HEADER_BYTES + RECORD_HEADER
    buf[offset] ^= 0xFF  # one payload byte still holds an older value
    assert ring.try_read() is None and ring.invalid_reads == 1
    buf[offset] ^= 0xFF  # the store lands
    assert ring.try_read() == b"complete record"


def test_reset_drops_unread_records_without_reusing_stamps() -> None:
    buf, ring = make_ring(128)
    assert ring.try_write(b"old one") and ring.try_write(b"old two")
    ring.park()
    ring.reset()
    assert ring.is_empty() and not ring.parked
    counters = memoryview(buf)[: Ring.HEADER_BYTES].cast("Q")
    assert counters[HEAD_WORD] == counters[TAIL_WORD] > 0  # moved forward, not back to zero
    counters.release()
    assert ring.try_write(b"new") and ring.drain() == [b"new"]


def test_attaching_view_agrees_on_mode_and_layout() -> None:
    buf, writer = make_ring(256, checked=True)
    reader = Ring(memoryview(buf), 256, init=False)
    assert reader.checked and reader.capacity == 256
    assert writer.try_write(b"across views")
    assert reader.try_read() == b"across views"
    assert writer.used_bytes() == 0
    with pytest.raises(ValueError, match="capacity 256"):
        Ring(memoryview(buf), 128, init=False)


def test_park_word_counts_parks() -> None:
    _, ring = make_ring(64)
    assert not ring.parked and ring.park_word == 0
    ring.parked = True
    first = ring.park_word
    ring.parked = False
    assert not ring.parked and ring.park_word == first & ~1
    ring.park()
    assert ring.parked and ring.park_word == first + 2  # a new sleep, a new word to ring for


def test_a_refused_write_remembers_the_head_it_saw_and_room_is_that_head_moving() -> None:
    _, ring = make_ring(64)
    assert ring.try_write(bytes(24)) and ring.try_write(bytes(16))
    assert not ring.try_write(bytes(16)) and ring.full_head == ring.head == 0
    assert ring.drain(1) == [bytes(24)]
    assert ring.head == 32 != ring.full_head  # what the gateway compares to see room
    assert ring.try_write(bytes(16))


def test_the_room_word_is_set_by_the_producer_and_taken_once_by_the_consumer() -> None:
    buf, producer = make_ring(64)
    consumer = Ring(memoryview(buf), 64, init=False)  # the other process's view of the same bytes
    assert not consumer.room_wanted and not consumer.take_room_request()
    producer.want_room()
    assert consumer.room_wanted
    assert consumer.take_room_request()  # the consumer rings once...
    assert not producer.room_wanted and not consumer.take_room_request()  # ...and only once
    producer.want_room()
    producer.want_room()  # two senders refused before the consumer looked: still one signal
    assert consumer.take_room_request() and not consumer.take_room_request()


def test_the_room_word_shares_the_tail_line_and_reset_clears_it() -> None:
    # the consumer loads the tail's cache line on every drain: checking the word costs no miss
    assert ROOM_WORD * 8 // LINE == TAIL_WORD * 8 // LINE
    buf, ring = make_ring(64)
    assert ring.try_write(bytes(24)) and ring.try_write(bytes(24)) and not ring.try_write(bytes(8))
    ring.want_room()
    counters = memoryview(buf)[: Ring.HEADER_BYTES].cast("Q")
    assert counters[ROOM_WORD] == 1
    ring.reset()
    assert counters[ROOM_WORD] == 0 and not ring.room_wanted and ring.full_head == 0
    counters.release()


def test_release_lets_the_mapping_close() -> None:
    mapping = mmap.mmap(-1, Ring.region_bytes(1024))
    view = memoryview(mapping)
    ring = Ring(view, 1024, init=True)
    assert ring.try_write(b"x")
    with pytest.raises(BufferError):
        mapping.close()
    ring.release()
    view.release()
    mapping.close()


@pytest.mark.parametrize("capacity", [0, 24, 100, (1 << 32) + 8])
def test_bad_capacities_are_refused(capacity: int) -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        Ring.region_bytes(capacity)


def test_regions_stay_cache_line_aligned() -> None:
    assert Ring.HEADER_BYTES == 256
    assert Ring.region_bytes(64) == 320 and Ring.region_bytes(72) == 384
