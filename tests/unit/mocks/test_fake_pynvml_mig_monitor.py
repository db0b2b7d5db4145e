"""The fake NVML without the MIG monitor capability answers as NVML does in a container that
lacks it: NO_PERMISSION on a MIG-enabled GPU (NVIDIA/k8s-device-plugin#399 and #1683,
NVIDIA/gpu-feature-discovery#6). The capability follows NVIDIA_MIG_MONITOR_DEVICES, read at
nvmlInit as the container runtime grants it at container start."""

from __future__ import annotations

from typing import Any

import pynvml
import pytest

from gputopo.mocks.fake_pynvml import MIG_MONITOR_ENV, make_fake_pynvml
from gputopo.mocks.profile import load_profile


def _initialised(monkeypatch: pytest.MonkeyPatch, value: str | None) -> Any:
    if value is None:
        monkeypatch.delenv(MIG_MONITOR_ENV, raising=False)
    else:
        monkeypatch.setenv(MIG_MONITOR_ENV, value)
    module = make_fake_pynvml(load_profile("dgx-a100-mig"))
    module.nvmlInit()
    return module


@pytest.mark.parametrize("value", [None, "", "0", "none"])
def test_mig_gpu_without_monitor_access_answers_no_permission_dgx_a100_mig(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    module = _initialised(monkeypatch, value)
    handle = module.nvmlDeviceGetHandleByIndex(0)
    assert module.nvmlDeviceGetMigMode(handle) == [1, 1]
    assert module.nvmlDeviceGetMaxMigDeviceCount(handle) == 7
    for call, args in (
        ("nvmlDeviceGetMemoryInfo", ()),
        ("nvmlDeviceGetMigDeviceHandleByIndex", (0,)),
        ("nvmlDeviceGetGpuInstanceById", (1,)),
    ):
        with pytest.raises(pynvml.NVMLError_NoPermission):
            getattr(module, call)(handle, *args)
    with pytest.raises(pynvml.NVMLError_NoPermission):
        module.nvmlDeviceGetMemoryInfo(handle, pynvml.nvmlMemory_v2)


def test_gpu_not_in_mig_mode_needs_no_monitor_access_dgx_a100_mig(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = _initialised(monkeypatch, None)
    profile = load_profile("dgx-a100-mig")
    plain = next(i for i, gpu in enumerate(profile.nvml_gpus()) if not gpu.mig.enabled)
    handle = module.nvmlDeviceGetHandleByIndex(plain)
    assert module.nvmlDeviceGetMemoryInfo(handle).total > 0


def test_monitor_access_as_the_daemonset_grants_it_lists_mig_devices_dgx_a100_mig(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = _initialised(monkeypatch, "all")
    handle = module.nvmlDeviceGetHandleByIndex(0)
    mig = module.nvmlDeviceGetMigDeviceHandleByIndex(handle, 0)
    assert module.nvmlDeviceGetGpuInstanceId(mig) >= 0
    assert module.control.mig_monitor


def test_control_takes_the_capability_away_at_run_time_dgx_a100_mig(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = _initialised(monkeypatch, "all")
    control = module.control
    handle = module.nvmlDeviceGetHandleByIndex(0)
    gpu_instance = module.nvmlDeviceGetGpuInstanceById(handle, 1)
    control.set_mig_monitor(False)
    with pytest.raises(pynvml.NVMLError_NoPermission):
        module.nvmlGpuInstanceGetInfo(gpu_instance)
    module.nvmlShutdown()
    module.nvmlInit()  # forced: the environment no longer decides
    assert not control.mig_monitor
    control.set_mig_monitor(None)
    assert control.mig_monitor
