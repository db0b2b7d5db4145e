"""The fake's driver can be unloaded and loaded again, as a containerised driver upgrade does:
refused while an NVML session is open (rmmod: module in use), DRIVER_NOT_LOADED at nvmlInit
while it is out, and the new version reported once it is back."""

from __future__ import annotations

import pynvml
import pytest

from gputopo.mocks.fake_pynvml import DriverInUse, make_fake_pynvml


def test_unload_is_refused_while_nvml_is_initialised_dgx_h100() -> None:
    nvml = make_fake_pynvml("dgx-h100")
    nvml.nvmlInit()
    with pytest.raises(DriverInUse, match=r"dgx-h100: .*in use \(1 NVML session"):
        nvml.control.unload_driver()
    assert nvml.control.driver_loaded
    nvml.nvmlShutdown()
    nvml.control.unload_driver()
    assert not nvml.control.driver_loaded


def test_nvml_cannot_initialise_while_the_driver_is_out_dgx_h100() -> None:
    nvml = make_fake_pynvml("dgx-h100")
    nvml.control.unload_driver()
    with pytest.raises(pynvml.NVMLError_DriverNotLoaded):
        nvml.nvmlInit()
    assert not nvml.control.initialized


def test_a_new_driver_needs_its_library_mounted_dgx_h100() -> None:
    """nvidia-smi's "Driver/library version mismatch": the container still has the old
    libnvidia-ml until it is recreated."""
    nvml = make_fake_pynvml("dgx-h100")
    nvml.control.unload_driver()
    nvml.control.load_driver("565.57.01", cuda_version=12070)
    with pytest.raises(pynvml.NVMLError_LibRmVersionMismatch):
        nvml.nvmlInit()
    nvml.control.mount_library()
    nvml.nvmlInit()
    assert nvml.nvmlSystemGetDriverVersion() == "565.57.01"
    assert nvml.nvmlSystemGetNVMLVersion() == "12.565.57.01"
    assert nvml.nvmlSystemGetCudaDriverVersion() == 12070
    assert nvml.nvmlDeviceGetCount() == 8


def test_a_malformed_driver_version_is_refused() -> None:
    nvml = make_fake_pynvml("dgx-h100")
    with pytest.raises(ValueError):
        nvml.control.load_driver("latest")


def test_volatile_ecc_counts_restart_with_the_driver_dgx_h100() -> None:
    nvml = make_fake_pynvml("dgx-h100")
    nvml.nvmlInit()
    nvml.control.inject_ecc_error(2, uncorrectable=True, count=2)
    handle = nvml.nvmlDeviceGetHandleByIndex(2)
    volatile, aggregate = pynvml.NVML_VOLATILE_ECC, pynvml.NVML_AGGREGATE_ECC
    uncorrected = pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
    assert nvml.nvmlDeviceGetTotalEccErrors(handle, uncorrected, volatile) == 2
    nvml.nvmlShutdown()
    nvml.control.unload_driver()
    nvml.control.load_driver()
    nvml.nvmlInit()
    handle = nvml.nvmlDeviceGetHandleByIndex(2)
    assert nvml.nvmlDeviceGetTotalEccErrors(handle, uncorrected, volatile) == 0
    assert nvml.nvmlDeviceGetTotalEccErrors(handle, uncorrected, aggregate) >= 2


def test_the_same_driver_loaded_again_initialises_at_once_dgx_h100() -> None:
    nvml = make_fake_pynvml("dgx-h100")
    nvml.control.unload_driver()
    nvml.control.load_driver()
    nvml.nvmlInit()
    assert nvml.nvmlSystemGetDriverVersion() == "550.54.15"
