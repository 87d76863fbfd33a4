"""``gateway/busy.py``: a slot's compute share of the last minute, on a fixed clock."""

from __future__ import annotations

import pytest

from gateway.busy import BusyWindow

PID, NEW_PID = 1000, 2000


class Clock:
    """Seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def reports(window: BusyWindow, clock: Clock, pid: int, compute_us: list[int], step_s: float = 1.0) -> None:
    """One Stats every ``step_s`` seconds carrying each cumulative ``compute_us`` in turn."""
    for value in compute_us:
        clock.now += step_s
        window.observe(pid, value)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_no_share_before_two_reports(clock: Clock) -> None:
    window = BusyWindow(clock=clock)
    assert window.share() == 0.0
    window.observe(PID, 5_000_000)  # the baseline: nothing before it to attribute that to
    clock.now += 1
    assert window.share() == 0.0


def test_half_busy_for_a_whole_minute_is_one_half(clock: Clock) -> None:
    window = BusyWindow(clock=clock)
    reports(window, clock, PID, [i * 500_000 for i in range(121)])  # two minutes at 0.5 s per second
    assert window.share() == pytest.approx(0.5)


def test_a_young_window_divides_by_the_time_since_the_first_report(clock: Clock) -> None:
    window = BusyWindow(clock=clock)
    reports(window, clock, PID, [0, 1_000_000, 2_000_000, 2_000_000])  # busy 2 s of the 3 since the first
    assert window.share() == pytest.approx(2 / 3)


def test_a_sample_straddling_the_window_start_is_prorated(clock: Clock) -> None:
    window = BusyWindow(window_s=10.0, clock=clock)
    window.observe(PID, 0)
    clock.now += 4
    window.observe(PID, 4_000_000)  # fully busy for 4 s
    clock.now += 8  # idle since: the window (last 10 s) holds 2 s of that busy span
    assert window.share() == pytest.approx(2 / 10)
    clock.now += 2
    assert window.share() == 0.0  # the sample left the window


def test_a_respawn_counts_the_new_incarnation_from_zero_and_the_gap_as_idle(clock: Clock) -> None:
    window = BusyWindow(clock=clock)
    reports(window, clock, PID, [0, 1_000_000, 2_000_000])  # a baseline, then fully busy for 2 s
    clock.now += 3  # dead and respawning for 2 s, then 1 s fully busy under a new pid
    window.observe(NEW_PID, 1_000_000)
    assert window.share() == pytest.approx(3 / 5)  # (2 + 1) busy seconds of the 5 since the baseline
    reports(window, clock, NEW_PID, [1_500_000])
    assert window.share() == pytest.approx(3.5 / 6)


def test_a_slot_that_stops_reporting_decays_to_idle(clock: Clock) -> None:
    window = BusyWindow(clock=clock)
    reports(window, clock, PID, [i * 1_000_000 for i in range(61)])
    assert window.share() == pytest.approx(1.0)
    clock.now += 30
    assert window.share() == pytest.approx(0.5)
    clock.now += 30
    assert window.share() == 0.0


def test_a_long_batch_landing_in_one_interval_never_reads_above_one(clock: Clock) -> None:
    window = BusyWindow(clock=clock)
    reports(window, clock, PID, [0, 5_000_000])  # a 5 s batch finished inside a 1 s interval
    assert window.share() == 1.0
