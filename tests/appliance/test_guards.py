"""appliance/guards.py: the memory guard's log events, one per crossing of the floor (its refusals
themselves are tested through admission, tests/gateway/test_admission.py)."""

from __future__ import annotations

import logging

import pytest

from appliance.guards import MemoryGuard

MIB = 1 << 20


def test_the_memory_guard_logs_a_trip_and_a_recovery_once_each(caplog: pytest.LogCaptureFixture) -> None:
    readings = iter([900 * MIB, 900 * MIB, 100 * MIB, 50 * MIB, 800 * MIB, 700 * MIB])
    with caplog.at_level(logging.WARNING, logger="appliance.guards"):
        guard = MemoryGuard(256 * MIB, probe=lambda: next(readings))  # reads twice: above
        for _ in range(4):
            guard.sample()
    crossings = [(r.event, r.available_bytes, r.floor_bytes) for r in caplog.records]  # type: ignore[attr-defined]
    assert crossings == [("memory_guard_trip", 100 * MIB, 256 * MIB), ("memory_guard_recovered", 800 * MIB, 256 * MIB)]
