"""The hypothesis strategy only produces profiles the fakes can serve."""

from __future__ import annotations

from pathlib import Path
from tempfile import TemporaryDirectory

import pynvml
from hypothesis import HealthCheck, given, settings

from gputopo.mocks.fake_pynvml import make_fake_pynvml
from gputopo.mocks.spec import MachineProfile
from gputopo.mocks.strategies import profiles
from gputopo.mocks.sysfs import build_sysfs


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(profiles())
def test_generated_profiles_are_served_by_both_fakes(profile: MachineProfile) -> None:
    fake = make_fake_pynvml(profile)
    try:
        fake.nvmlInit()
    except pynvml.NVMLError:
        assert profile.nvml.load_error or profile.nvml.init_error
        return
    assert fake.nvmlDeviceGetCount() == len(profile.nvml_gpus())
    for index in range(fake.nvmlDeviceGetCount()):
        try:
            handle = fake.nvmlDeviceGetHandleByIndex(index)
            assert (
                fake.nvmlDeviceGetPciInfo(handle).busId.lower()[4:]
                == profile.nvml_gpus()[index].bus_id
            )
        except pynvml.NVMLError_GpuIsLost:
            assert profile.nvml_gpus()[index].lost
    with TemporaryDirectory() as directory:
        root = build_sysfs(profile, Path(directory))
        for gpu in profile.gpus:
            assert (root / "bus/pci/devices" / gpu.bus_id / "vendor").read_text() == "0x10de\n"


@settings(max_examples=20, deadline=None)
@given(profiles(max_gpus=4, faults=False))
def test_fault_free_profiles_have_no_injected_errors(profile: MachineProfile) -> None:
    assert not profile.nvml.load_error
    assert all(not gpu.errors and not gpu.lost and not gpu.hidden_from_nvml for gpu in profile.gpus)
    assert len(profile.gpus) <= 4
