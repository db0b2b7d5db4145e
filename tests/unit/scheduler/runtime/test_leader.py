"""Leader election's small parts: the Lease's time format and its timings."""

from __future__ import annotations

import pytest

from gputopo.scheduler.runtime.leader import LeaseConfig, micro_time


def test_micro_time_always_has_six_fractional_digits() -> None:
    from datetime import UTC, datetime

    assert micro_time(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05.000000Z"


def test_lease_timings_must_nest() -> None:
    with pytest.raises(ValueError, match="retry period < renew deadline < lease duration"):
        LeaseConfig("gputopo-system", "gputopo-scheduler", "a", 10.0, 15.0, 2.0)
