"""Health signals: clock event reason bits decoded to names."""

from __future__ import annotations

from gputopo.agent.nvml.signals import decode_clock_event_reasons


def test_clock_event_reasons_decode_to_names() -> None:
    assert decode_clock_event_reasons(0x0) == ()
    assert decode_clock_event_reasons(0x48) == ("hw_slowdown", "hw_thermal_slowdown")
