"""A driver reloaded under the agent (the GPU Operator's upgrade) resets every GPU: the XIDs and
double-bit ECC events of before stop counting for health, the XID counts themselves stay."""

from __future__ import annotations

from typing import Any

import pytest

from gputopo.agent.health import assess
from gputopo.agent.nvml import NvmlAdapter, XidDecay
from gputopo.agent.topology import Health, XidEvent
from gputopo.mocks.fake_pynvml import make_fake_pynvml


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def reload(adapter: NvmlAdapter, control: Any, clock: FakeClock) -> None:
    adapter.close()
    control.unload_driver()
    clock.now += 120
    control.load_driver()  # the driver pod restarted (another version: a new container)
    adapter.driver_reloaded()
    assert adapter.open().available


@pytest.mark.parametrize("window_s", [0.0, 3600.0])
def test_a_reset_required_xid_from_before_the_reload_no_longer_fails_the_gpu_dgx_h100(
    window_s: float,
) -> None:
    clock = FakeClock()
    nvml = make_fake_pynvml("dgx-h100")
    adapter = NvmlAdapter(nvml, xid_decay=XidDecay(window_s=window_s), clock=clock)
    adapter.open()
    nvml.control.inject_xid(4, 79)  # fallen off the bus: counts until a reset
    assert assess(adapter.health_signals()[4])[0] is Health.FAILED
    reload(adapter, nvml.control, clock)
    signals = adapter.health_signals()[4]
    assert signals.stale_xids == (79,)
    assert assess(signals)[0] is Health.OK
    assert adapter.xid_counts()[4] == (XidEvent(code=79, count=1),)  # the counter stays
    clock.now += 1
    nvml.control.inject_xid(4, 79)  # it happens again with the new driver: it counts
    signals = adapter.health_signals()[4]
    assert signals.stale_xids == ()
    assert assess(signals)[0] is Health.FAILED


def test_ecc_events_of_the_old_session_are_dropped_dgx_h100() -> None:
    clock = FakeClock()
    nvml = make_fake_pynvml("dgx-h100")
    adapter = NvmlAdapter(nvml, clock=clock)
    adapter.open()
    nvml.control.inject_ecc_error(2, uncorrectable=True)
    adapter.drain_xid_events()
    assert assess(adapter.health_signals()[2])[0] is Health.FAILED
    reload(adapter, nvml.control, clock)
    assert adapter.ecc_event_counts() == {}
    assert assess(adapter.health_signals()[2])[0] is Health.OK
