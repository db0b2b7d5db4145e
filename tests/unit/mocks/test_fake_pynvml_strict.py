"""The fake NVML answers as real NVML where the agent could otherwise be too trusting:
utilisation on a MIG-enabled GPU, and nvmlDeviceGetNvLinkCapability's signature and answers."""

from __future__ import annotations

import inspect
from typing import Any

import pynvml
import pytest

from gputopo.mocks.fake_pynvml import MIG_MONITOR_ENV, make_fake_pynvml
from gputopo.mocks.profile import load_profile


def _initialised(monkeypatch: pytest.MonkeyPatch, profile: str) -> Any:
    monkeypatch.setenv(MIG_MONITOR_ENV, "all")
    module = make_fake_pynvml(load_profile(profile))
    module.nvmlInit()
    return module


def test_utilisation_is_not_supported_on_a_mig_enabled_parent_gpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = _initialised(monkeypatch, "dgx-a100-mig")
    mig = [
        i
        for i in range(module.nvmlDeviceGetCount())
        if module.nvmlDeviceGetMigMode(module.nvmlDeviceGetHandleByIndex(i))[0] == 1
    ]
    plain = [i for i in range(module.nvmlDeviceGetCount()) if i not in mig]
    assert mig and plain
    with pytest.raises(pynvml.NVMLError_NotSupported):
        module.nvmlDeviceGetUtilizationRates(module.nvmlDeviceGetHandleByIndex(mig[0]))
    utilization = module.nvmlDeviceGetUtilizationRates(module.nvmlDeviceGetHandleByIndex(plain[0]))
    assert 0 <= utilization.gpu <= 100


def test_nvlink_capability_has_pynvmls_signature() -> None:
    fake = make_fake_pynvml(load_profile("dgx-h100"))
    real = inspect.signature(pynvml.nvmlDeviceGetNvLinkCapability).parameters
    assert list(inspect.signature(fake.nvmlDeviceGetNvLinkCapability).parameters) == list(real)


def test_nvlink_capabilities_as_nvidia_smi_nvlink_c_shows_them_on_a100_and_h100(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = _initialised(monkeypatch, "dgx-h100")
    handle = module.nvmlDeviceGetHandleByIndex(0)
    answers = {
        cap: module.nvmlDeviceGetNvLinkCapability(handle, 0, cap)
        for cap in range(pynvml.NVML_NVLINK_CAP_COUNT)
    }
    assert answers == {
        pynvml.NVML_NVLINK_CAP_P2P_SUPPORTED: 1,
        pynvml.NVML_NVLINK_CAP_SYSMEM_ACCESS: 1,
        pynvml.NVML_NVLINK_CAP_P2P_ATOMICS: 1,
        pynvml.NVML_NVLINK_CAP_SYSMEM_ATOMICS: 1,
        pynvml.NVML_NVLINK_CAP_SLI_BRIDGE: 1,
        pynvml.NVML_NVLINK_CAP_VALID: 0,  # "Link is supported: false" on every real capture
    }
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        module.nvmlDeviceGetNvLinkCapability(handle, 0, pynvml.NVML_NVLINK_CAP_COUNT)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        module.nvmlDeviceGetNvLinkCapability(handle, pynvml.NVML_NVLINK_MAX_LINKS, 0)


def test_nvlink_capability_is_not_supported_on_a_gpu_without_nvlink(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = _initialised(monkeypatch, "l4-pcie")
    with pytest.raises(pynvml.NVMLError_NotSupported):
        module.nvmlDeviceGetNvLinkCapability(module.nvmlDeviceGetHandleByIndex(0), 0, 0)
