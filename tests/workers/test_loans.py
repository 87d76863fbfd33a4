"""workers/loans.py: lent cores are used only while widened passes run uncontended."""

from __future__ import annotations

from workers.loans import CONTENDED_SHARE, MAX_BACKOFF_S, MIN_BACKOFF_S, LoanGuard


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def contended(guard: LoanGuard) -> bool:
    """A two-thread pass that used a quarter of its two CPUs: one thread waited for its core."""
    return guard.record(2, 0.010, 0.005)


def test_an_uncontended_pass_keeps_the_loans_coming() -> None:
    guard = LoanGuard(Clock())
    assert guard.record(2, 0.010, 2 * 0.010 * CONTENDED_SHARE) is False
    assert guard.allows() and (guard.contended, guard.declined) == (0, 0)


def test_a_contended_pass_declines_loans_for_the_backoff_then_probes_again() -> None:
    clock = Clock()
    guard = LoanGuard(clock)
    assert contended(guard) is True
    assert not guard.allows() and not guard.allows()
    clock.now += MIN_BACKOFF_S
    assert guard.allows()
    assert (guard.contended, guard.declined) == (1, 2)


def test_the_backoff_doubles_while_probes_stay_contended_up_to_its_cap_and_resets_after_a_good_one() -> None:
    clock = Clock()
    guard = LoanGuard(clock)
    waits = []
    for _ in range(10):
        contended(guard)
        waits.append(guard.until - clock.now)
        clock.now = guard.until
    assert waits[:3] == [MIN_BACKOFF_S, 2 * MIN_BACKOFF_S, 4 * MIN_BACKOFF_S]
    assert max(waits) == MAX_BACKOFF_S
    guard.record(2, 0.010, 0.019)
    contended(guard)
    assert guard.until - clock.now == MIN_BACKOFF_S


def test_a_pass_that_did_not_widen_says_nothing() -> None:
    guard = LoanGuard(Clock())
    assert guard.record(1, 0.010, 0.001) is False
    assert guard.record(2, 0.0, 0.0) is False
    assert guard.allows()
