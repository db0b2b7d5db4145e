"""Runtime control of a fake machine: the hooks event, health and metrics tests rely on."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pynvml
import pytest
import yaml

from gputopo.mocks.fake_pynvml import make_fake_pynvml
from gputopo.mocks.profile import load_profile


def test_injected_xid_reaches_registered_event_sets_only() -> None:
    fake = make_fake_pynvml("dgx-h100")
    fake.nvmlInit()
    registered, other = fake.nvmlEventSetCreate(), fake.nvmlEventSetCreate()
    fake.nvmlDeviceRegisterEvents(
        fake.nvmlDeviceGetHandleByIndex(2), pynvml.nvmlEventTypeXidCriticalError, registered
    )
    fake.nvmlDeviceRegisterEvents(
        fake.nvmlDeviceGetHandleByIndex(3), pynvml.nvmlEventTypeXidCriticalError, other
    )
    fake.control.inject_xid(2, 48)
    data = fake.nvmlEventSetWait(registered, 0)
    assert (data.eventData, fake.nvmlDeviceGetIndex(data.device)) == (48, 2)
    assert data.gpuInstanceId == 0xFFFFFFFF
    with pytest.raises(pynvml.NVMLError_Timeout):
        fake.nvmlEventSetWait_v2(other, 0)


def test_event_wait_wakes_when_an_xid_arrives() -> None:
    fake = make_fake_pynvml("l4-pcie")
    fake.nvmlInit()
    events = fake.nvmlEventSetCreate()
    fake.nvmlDeviceRegisterEvents(
        fake.nvmlDeviceGetHandleByIndex(0), pynvml.nvmlEventTypeXidCriticalError, events
    )
    timer = threading.Timer(0.05, fake.control.inject_xid, args=(0, 94))
    started = time.monotonic()
    timer.start()
    assert fake.nvmlEventSetWait_v2(events, 5000).eventData == 94
    assert time.monotonic() - started < 4


def test_freed_event_set_is_invalid() -> None:
    fake = make_fake_pynvml("l4-pcie")
    fake.nvmlInit()
    events = fake.nvmlEventSetCreate()
    fake.nvmlEventSetFree(events)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        fake.nvmlEventSetWait_v2(events, 0)


def test_marking_a_gpu_lost_mid_run() -> None:
    fake = make_fake_pynvml("l4-pcie")
    fake.nvmlInit()
    handle = fake.nvmlDeviceGetHandleByIndex(1)
    assert fake.nvmlDeviceGetName(handle) == "NVIDIA L4"
    fake.control.set_lost(1)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        fake.nvmlDeviceGetName(handle)
    fake.control.set_lost(1, lost=False)
    assert fake.nvmlDeviceGetName(handle) == "NVIDIA L4"


def test_metrics_setters() -> None:
    fake = make_fake_pynvml("dgx-h100")
    fake.nvmlInit()
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    control = fake.control
    control.set_utilization(0, gpu=87, memory=42)
    control.set_memory_used(0, 1024)
    control.set_temperature(0, 77)
    control.set_power(0, 612.5)
    control.set_throttle_reasons(0, pynvml.nvmlClocksEventReasonSwPowerCap)
    utilization = fake.nvmlDeviceGetUtilizationRates(handle)
    assert (utilization.gpu, utilization.memory) == (87, 42)
    memory = fake.nvmlDeviceGetMemoryInfo(handle, pynvml.nvmlMemory_v2)
    assert memory.used == 1024 * 1024 * 1024
    assert memory.free == memory.total - memory.reserved - memory.used
    legacy = fake.nvmlDeviceGetMemoryInfo(handle)  # v1: reserved memory counts as used
    assert legacy.used == memory.used + memory.reserved
    assert legacy.free == legacy.total - legacy.used
    assert fake.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU) == 77
    assert fake.nvmlDeviceGetPowerUsage(handle) == 612500
    assert fake.nvmlDeviceGetEnforcedPowerLimit(handle) == 700000
    assert (
        fake.nvmlDeviceGetCurrentClocksEventReasons(handle)
        == pynvml.nvmlClocksEventReasonSwPowerCap
    )
    assert (
        fake.nvmlDeviceGetCurrentClocksThrottleReasons(handle)
        == pynvml.nvmlClocksThrottleReasonSwPowerCap
    )


def test_scripted_utilisation_sequence_advances_then_holds(tmp_path: Path) -> None:
    document = {
        "gpus": [
            {
                "bus_id": "0000:18:00.0",
                "name": "NVIDIA L4",
                "memory_mib": 23034,
                "compute_capability": "8.9",
                "architecture": "ada",
                "pci_device_id": 0x27B8,
                "metrics": {"utilization_gpu": [0, 50, 100], "power_w": [10, 20.5]},
            }
        ]
    }
    path = tmp_path / "scripted.yaml"
    path.write_text(yaml.safe_dump(document))
    fake = make_fake_pynvml(load_profile(path))
    fake.nvmlInit()
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    readings = [fake.nvmlDeviceGetUtilizationRates(handle).gpu for _ in range(5)]
    assert readings == [0, 50, 100, 100, 100]
    assert [fake.nvmlDeviceGetPowerUsage(handle) for _ in range(3)] == [10000, 20500, 20500]


def test_ecc_remapped_rows_and_nvlink_setters() -> None:
    fake = make_fake_pynvml("dgx-h100")
    fake.nvmlInit()
    handle = fake.nvmlDeviceGetHandleByIndex(3)
    fake.control.set_ecc(3, volatile_uncorrected=2)
    fake.control.set_remapped_rows(3, uncorrectable=1, failure=True)
    fake.control.set_nvlink_active(3, 5, False)
    uncorrected = pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
    assert fake.nvmlDeviceGetTotalEccErrors(handle, uncorrected, pynvml.NVML_VOLATILE_ECC) == 2
    assert fake.nvmlDeviceGetRemappedRows(handle) == (0, 1, 0, 1)
    assert fake.nvmlDeviceGetNvLinkState(handle, 5) == 0
    assert fake.nvmlDeviceGetNvLinkState(handle, 4) == 1


def test_transient_injected_error_then_success() -> None:
    fake = make_fake_pynvml("dgx-h100")
    fake.nvmlInit()
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    fake.control.inject_error("nvmlDeviceGetUUID", "TIMEOUT", index=0, times=2)
    for _ in range(2):
        with pytest.raises(pynvml.NVMLError_Timeout):
            fake.nvmlDeviceGetUUID(handle)
    assert fake.nvmlDeviceGetUUID(handle).startswith("GPU-")
    assert fake.control.calls["nvmlDeviceGetUUID"] == 3


def test_node_wide_injected_error_and_clear() -> None:
    fake = make_fake_pynvml("dgx-h100")
    fake.nvmlInit()
    fake.control.inject_error("nvmlDeviceGetCount", "UNKNOWN")
    with pytest.raises(pynvml.NVMLError_Unknown):
        fake.nvmlDeviceGetCount()
    fake.control.clear_errors()
    assert fake.nvmlDeviceGetCount() == 8


def test_profile_error_injection_per_gpu(tmp_path: Path) -> None:
    path = tmp_path / "faulty.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "base": "dgx-h100",
                "gpus": {"0000:43:00.0": {"errors": {"nvmlDeviceGetNvLinkState": "NOT_SUPPORTED"}}},
            }
        )
    )
    fake = make_fake_pynvml(load_profile(path))
    fake.nvmlInit()
    with pytest.raises(pynvml.NVMLError_NotSupported):
        fake.nvmlDeviceGetNvLinkState(fake.nvmlDeviceGetHandleByIndex(1), 0)
    assert fake.nvmlDeviceGetNvLinkState(fake.nvmlDeviceGetHandleByIndex(0), 0) == 1


def test_hidden_gpu_is_not_enumerated(tmp_path: Path) -> None:
    path = tmp_path / "hidden.yaml"
    path.write_text(
        yaml.safe_dump({"base": "l4-pcie", "gpus": {"0000:3a:00.0": {"hidden_from_nvml": True}}})
    )
    fake = make_fake_pynvml(load_profile(path))
    fake.nvmlInit()
    assert fake.nvmlDeviceGetCount() == 3
    with pytest.raises(pynvml.NVMLError_NotFound):
        fake.nvmlDeviceGetHandleByPciBusId("0000:3a:00.0")


def test_control_rejects_unknown_gpu_and_error() -> None:
    fake = make_fake_pynvml("l4-pcie")
    with pytest.raises(IndexError, match="no NVML GPU with index 9"):
        fake.control.set_lost(9)
    with pytest.raises(ValueError, match="unknown NVML function"):
        fake.control.inject_error("nvmlDeviceGetName", "SOMETIMES")
