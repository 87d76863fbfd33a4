"""appliance/ipc/doorbell.py: ring once per park, bounded sleeps, fd checks, the spin policy."""

from __future__ import annotations

import os
import time
from typing import Iterator

import pytest

from appliance.ipc.doorbell import Doorbell, SpinPolicy, new_eventfd, require_eventfd, yield_was_contended

PARKED, UNPARKED = 0b11, 0b10  # park words: sequence 1, with and without the parked bit


@pytest.fixture
def bell() -> Iterator[Doorbell]:
    created = Doorbell(new_eventfd())
    yield created
    created.close()


def test_rings_only_a_parked_consumer_once_per_park(bell: Doorbell) -> None:
    bell.ring_if_parked(UNPARKED)
    assert bell.rung == 0 and bell.clear() == 0  # awake: no syscall
    for _ in range(3):
        bell.ring_if_parked(PARKED)
    assert bell.rung == 1  # one ring per park, however many records
    bell.ring_if_parked(PARKED + 2)  # parked again: a new sequence needs a new ring
    assert bell.rung == 2
    assert bell.clear() == 2 and bell.clear() == 0  # counts coalesce: one read drains all


def test_wait_is_bounded_and_reports_whether_it_was_rung(bell: Doorbell) -> None:
    start = time.monotonic()
    assert not bell.wait(0.05)
    assert 0.04 <= time.monotonic() - start < 2.0
    bell.ring_if_parked(PARKED)
    assert bell.wait(5.0)
    assert bell.clear() == 0  # the wait consumed the ring


def test_new_eventfds_stay_in_this_process_unless_passed(bell: Doorbell) -> None:
    assert os.readlink(f"/proc/self/fd/{bell.fd}") == "anon_inode:[eventfd]"
    assert not os.get_inheritable(bell.fd)
    require_eventfd(bell.fd)


def test_require_eventfd_names_the_missing_pass_fds() -> None:
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(OSError, match=r"pipe:.*not an inherited eventfd.*pass_fds"):
            require_eventfd(read_end)
    finally:
        os.close(read_end)
        os.close(write_end)
    with pytest.raises(OSError, match="fd 9999 is not open"):
        require_eventfd(9999)


def test_a_yield_is_contended_only_past_its_limit() -> None:
    assert yield_was_contended(time.monotonic() - 1.0, 0.5)
    assert not yield_was_contended(time.monotonic(), 10.0)


def test_spin_policy_backs_off_while_windows_catch_nothing() -> None:
    policy = SpinPolicy()
    assert policy.allow()  # a window opens ...
    skipped = []
    for _ in range(12):
        policy.record(caught=False)  # ... and catches nothing
        skips = 0
        while not policy.allow():  # sends without a window, until the next one opens
            skips += 1
        skipped.append(skips)
    assert skipped == [1, 2, 4, 8, 16, 32, 64, 128, 256, 256, 256, 256]
    policy.record(caught=True)
    assert policy.allow() and policy.allow()


def test_spin_policy_resumes_when_traffic_gets_fast_unless_the_core_is_busy() -> None:
    policy = SpinPolicy()
    for _ in range(5):
        policy.record(caught=False)
    assert not policy.allow()
    policy.would_have_caught()  # a record came quickly while we slept: spin again
    assert policy.allow()
    policy.record(caught=False, contended=True)  # the spin lost its core
    policy.would_have_caught()
    assert not policy.allow()  # quick records do not justify spinning on a busy core
