"""ResourceSlices as NVIDIA's DRA driver publishes them, generated from machine profiles."""

from __future__ import annotations

import re
from typing import Any

import pytest

from gputopo.mocks import resourceslices
from gputopo.mocks.fake_pynvml import make_fake_pynvml
from gputopo.mocks.profile import builtin_profile_names, load_profile

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _devices(slices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for s in slices for d in s["spec"].get("devices", [])]


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    return int(quantity)


@pytest.mark.parametrize("name", builtin_profile_names())
@pytest.mark.parametrize("partitionable", [False, True])
def test_every_profile_gives_valid_names_and_one_pool(name: str, partitionable: bool) -> None:
    profile = load_profile(name)
    slices = resourceslices.resource_slices(profile, "node-a", partitionable=partitionable)
    assert bool(slices) == bool(profile.nvml_gpus())
    assert all(s["spec"]["pool"]["resourceSliceCount"] == len(slices) for s in slices)
    assert {s["spec"]["pool"]["name"] for s in slices} <= {"node-a"}
    names = [d["name"] for d in _devices(slices)]
    assert len(names) == len(set(names))
    assert all(DNS_LABEL.match(n) for n in names), names
    for device in _devices(slices):
        assert len(device["attributes"]) + len(device["capacity"]) <= 32
    assert all(len(s["spec"].get("devices", [])) <= 128 for s in slices)


def test_full_gpu_on_dgx_h100_carries_the_drivers_attributes() -> None:
    profile = load_profile("dgx-h100")
    (one,) = resourceslices.resource_slices(profile, "dgx")
    gpu0 = one["spec"]["devices"][0]
    first = profile.nvml_gpus()[0]
    assert gpu0["name"] == "gpu-0"
    attributes = gpu0["attributes"]
    assert attributes["type"] == {"string": "gpu"}
    assert attributes["uuid"] == {"string": first.uuid}
    assert attributes["productName"] == {"string": first.name}
    assert attributes["architecture"] == {"string": "Hopper"}
    assert attributes["cudaComputeCapability"] == {"version": "9.0.0"}
    assert attributes["resource.kubernetes.io/pciBusID"] == {"string": first.bus_id}
    assert attributes["resource.kubernetes.io/pcieRoot"]["string"].startswith("pci0000:")
    assert _bytes(gpu0["capacity"]["memory"]["value"]) == first.memory_mib * 2**20
    assert one["spec"]["driver"] == "gpu.nvidia.com"
    assert one["spec"]["nodeName"] == "dgx"


def test_driver_version_is_normalised_to_semver_without_leading_zeros() -> None:
    assert resourceslices.semver("560.35.03") == "560.35.3"
    assert resourceslices.semver("9.0") == "9.0.0"


def test_static_mig_devices_carry_the_uuids_nvml_reports() -> None:
    profile = load_profile("dgx-a100-mig")
    (one,) = resourceslices.resource_slices(profile)
    nvml = make_fake_pynvml(profile)
    nvml.nvmlInit()
    reported = set()
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        if nvml.nvmlDeviceGetMigMode(handle)[0] != 1:
            continue
        for slot in range(nvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except nvml.NVMLError:
                continue
            reported.add(nvml.nvmlDeviceGetUUID(mig))
    published = {
        d["attributes"]["uuid"]["string"]
        for d in one["spec"]["devices"]
        if d["attributes"]["type"]["string"] == "mig"
    }
    assert published
    assert published <= reported


def test_partitionable_mig_devices_fit_their_gpus_counter_set() -> None:
    profile = load_profile("dgx-h100")
    slices = resourceslices.resource_slices(profile, partitionable=True)
    counters_slice, *gpu_slices = slices
    assert "devices" not in counters_slice["spec"]
    sets = {s["name"]: s["counters"] for s in counters_slice["spec"]["sharedCounters"]}
    assert len(sets) == len(profile.nvml_gpus()) == len(gpu_slices)
    for device in _devices(slices):
        (consumption,) = device["consumesCounters"]
        available = sets[consumption["counterSet"]]
        for counter, value in consumption["counters"].items():
            assert _bytes(value["value"]) <= _bytes(available[counter]["value"])
    full = next(d for d in _devices(slices) if d["name"] == "gpu-0")
    assert full["consumesCounters"][0]["counters"] == sets["gpu-0-counter-set"]
    seven = [d for d in _devices(slices) if d["name"].startswith("gpu-0-mig-1g10gb-19-")]
    assert len(seven) == 7
    slices_used = {c for d in seven for c in d["consumesCounters"][0]["counters"] if "slice" in c}
    assert slices_used == {f"memory-slice-{i}" for i in range(7)}


def test_gpus_without_mig_have_no_counter_set() -> None:
    profile = load_profile("l4-pcie")
    slices = resourceslices.resource_slices(profile, partitionable=True)
    assert all("sharedCounters" not in s["spec"] for s in slices)
    assert all("consumesCounters" not in d for d in _devices(slices))


def test_device_classes_match_the_drivers_chart() -> None:
    gpu, mig = resourceslices.device_classes()
    assert gpu["metadata"]["name"] == "gpu.nvidia.com"
    assert gpu["spec"]["extendedResourceName"] == "nvidia.com/gpu"
    assert "type == 'gpu'" in gpu["spec"]["selectors"][0]["cel"]["expression"]
    assert mig["metadata"]["name"] == "mig.nvidia.com"
    assert "extendedResourceName" not in mig["spec"]
    (plain, _) = resourceslices.device_classes(extended_resource_name=None)
    assert "extendedResourceName" not in plain["spec"]
