"""NVML events beyond XIDs, and how long an XID counts: ECC error events registered where the
GPU supports them (with a clean fallback where it does not), and the XID decay rule — a
non-recurring XID stops counting after the window, a reset-requiring one does not."""

from __future__ import annotations

from typing import Any

import pytest

from gputopo.agent.health import assess
from gputopo.agent.nvml import RESET_REQUIRED_XIDS, NvmlAdapter, XidDecay
from gputopo.agent.topology import Health, XidEvent
from gputopo.mocks.fake_pynvml import make_fake_pynvml


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _adapter(profile: str, **kwargs: Any) -> tuple[NvmlAdapter, Any]:
    nvml = make_fake_pynvml(profile)
    adapter = NvmlAdapter(nvml, **kwargs)
    adapter.open()
    return adapter, nvml.control


def test_uncorrectable_ecc_event_fails_the_gpu_dgx_h100() -> None:
    adapter, control = _adapter("dgx-h100")
    control.inject_ecc_error(2, uncorrectable=True)
    control.inject_ecc_error(5, uncorrectable=False, count=3)
    adapter.drain_xid_events()
    assert adapter.ecc_event_counts() == {2: {"uncorrected": 1}, 5: {"corrected": 3}}
    signals = adapter.health_signals()
    assert signals[2].ecc.volatile_uncorrected == 1
    assert assess(signals[2])[0] is Health.FAILED
    assert signals[5].ecc.volatile_corrected == 3
    assert assess(signals[5])[0] is Health.OK  # corrected errors are what ECC is for


def test_ecc_event_counts_even_when_the_counter_query_fails_dgx_h100() -> None:
    adapter, control = _adapter("dgx-h100")
    control.inject_error("nvmlDeviceGetTotalEccErrors", "UNKNOWN", index=1)
    control.inject_ecc_error(1)
    signals = adapter.health_signals()
    assert signals[1].ecc.volatile_uncorrected == 1
    assert assess(signals[1])[0] is Health.FAILED


def test_gpu_without_ecc_registers_xid_events_only_rtx4090_workstation() -> None:
    adapter, control = _adapter("rtx4090-workstation")
    with pytest.raises(ValueError, match="GPU 0 has no ECC"):
        control.inject_ecc_error(0)
    control.inject_xid(0, 79)
    assert adapter.drain_xid_events() == {0: (XidEvent(79, 1),)}


def test_unknown_supported_events_fall_back_to_xids_when_ecc_is_refused() -> None:
    """nvmlDeviceGetSupportedEventTypes failing: XID + ECC is tried, NVML refuses the whole
    registration (the GPU has no ECC), and XIDs alone are registered."""
    nvml = make_fake_pynvml("rtx4090-workstation")
    nvml.control.inject_error("nvmlDeviceGetSupportedEventTypes", "UNKNOWN")
    adapter = NvmlAdapter(nvml)
    adapter.open()
    gpus = len(nvml.control.profile.nvml_gpus())
    assert nvml.control.calls["nvmlDeviceRegisterEvents"] == 2 * gpus  # refused, then XIDs
    nvml.control.inject_xid(0, 48)
    assert adapter.drain_xid_events() == {0: (XidEvent(48, 1),)}


def test_an_xid_that_does_not_recur_stops_counting_after_the_window_dgx_h100() -> None:
    clock = FakeClock()
    adapter, control = _adapter("dgx-h100", xid_decay=XidDecay(window_s=600), clock=clock)
    control.inject_xid(3, 74)  # NVLink error: failed, but not one that needs a reset
    assert assess(adapter.health_signals()[3])[0] is Health.FAILED
    clock.now += 599
    assert assess(adapter.health_signals()[3])[0] is Health.FAILED
    clock.now += 2
    signals = adapter.health_signals()[3]
    assert signals.stale_xids == (74,)
    assert signals.xid_events == (XidEvent(74, 1),)  # the metrics counter keeps counting
    assert assess(signals) == (Health.OK, ())
    control.inject_xid(3, 74)  # it recurs: counts again, for a new window
    assert assess(adapter.health_signals()[3])[0] is Health.FAILED


@pytest.mark.parametrize("code", sorted(RESET_REQUIRED_XIDS))
def test_an_xid_that_needs_a_gpu_reset_does_not_decay_dgx_h100(code: int) -> None:
    clock = FakeClock()
    adapter, control = _adapter("dgx-h100", xid_decay=XidDecay(window_s=60), clock=clock)
    control.inject_xid(0, code)
    clock.now += 10 * 24 * 3600
    signals = adapter.health_signals()[0]
    assert signals.stale_xids == ()
    assert assess(signals)[0] is not Health.OK


def test_window_zero_keeps_every_xid_until_restart_dgx_h100() -> None:
    clock = FakeClock()
    adapter, control = _adapter("dgx-h100", xid_decay=XidDecay(window_s=0), clock=clock)
    control.inject_xid(0, 74)
    clock.now += 10 * 24 * 3600
    assert assess(adapter.health_signals()[0])[0] is Health.FAILED


def test_a_reenumerated_gpu_sheds_the_previous_boards_xids_dgx_h100() -> None:
    adapter, control = _adapter("dgx-h100")
    adapter.snapshot()
    control.inject_xid(6, 79)
    assert adapter.snapshot().gpus[6].signals.xid_events == (XidEvent(79, 1),)
    control.replace_gpu(6, "GPU-00000000-0000-0000-0000-00000000beef")
    gpu = adapter.snapshot().gpus[6]
    assert gpu.signals.xid_events == ()
    assert assess(gpu.signals)[0] is Health.OK


def test_negative_xid_window_is_refused() -> None:
    with pytest.raises(ValueError, match="--xid-window -1"):
        XidDecay(window_s=-1)
