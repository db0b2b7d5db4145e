"""ResourceSlices and DeviceClasses for a machine profile, as NVIDIA's DRA driver publishes them.

gputopo is not a DRA driver; its tests need the objects the real one (k8s-dra-driver-gpu, driver
``gpu.nvidia.com``) would publish for a node, so that the scheduler's join of ResourceSlice
devices to the agent's topology annotation, and its allocator, meet the real layout. Facts taken
from the driver's public code (NVIDIA/k8s-dra-driver-gpu, read at commit 22407113):

- ``cmd/gpu-kubelet-plugin/deviceinfo.go``: device names ``gpu-<minor>``; a full GPU's attributes
  ``type`` ("gpu"), ``uuid``, ``productName``, ``brand``, ``architecture`` (strings),
  ``cudaComputeCapability``, ``driverVersion``, ``cudaDriverVersion`` (versions, semver
  normalised), plus the standard ``resource.kubernetes.io/pciBusID`` and
  ``resource.kubernetes.io/pcieRoot``; capacity ``memory`` in bytes. No NUMA node and no NVLink
  attribute is published for a GPU (only the VFIO device type carries ``numa``).
- ``cmd/gpu-kubelet-plugin/mig.go``: MIG device names
  ``gpu-<minor>-mig-<profile without dots>-<GI profile id>-<placement start>``; attributes
  ``type`` ("mig"), ``parentUUID``, ``profile`` and the parent's strings and versions; capacities
  ``multiprocessors``, ``copyEngines``, ``decoders``, ``encoders``, ``jpegEngines``,
  ``ofaEngines``, ``memory``.
- ``cmd/gpu-kubelet-plugin/partitions.go`` and ``driver.go`` (partitionable devices, KEP-4815,
  "DynamicMIG", Kubernetes 1.35+ split layout): one slice holding only ``sharedCounters`` (one
  counter set ``gpu-<minor>-counter-set`` per GPU: each capacity as a counter named in DNS style
  (``copy-engines``), its maximum over every profile and placement, plus ``memory-slice-<i>``
  of 1 per memory slice), then one slice per GPU holding its full device (consuming every
  counter) and one device per profile and possible placement (consuming its capacities and its
  memory slices). Profiles whose compute instance is smaller than the GPU instance are skipped.
- ``cmd/gpu-kubelet-plugin/nvlib.go``: ``cudaDriverVersion`` is ``<major>.<minor>`` of NVML's
  integer; the PCIe root is the host bridge above the GPU (``pci0000:15``).
- ``deployments/helm/dra-driver-nvidia-gpu/templates/deviceclass-{gpu,mig}.yaml``: DeviceClasses
  ``gpu.nvidia.com`` (with ``extendedResourceName: nvidia.com/gpu`` on ``resource.k8s.io/v1``)
  and ``mig.nvidia.com``, each one CEL selector on driver and ``type``.

Without the partitionable mode (the driver's default) a MIG-enabled GPU is published as its
existing MIG devices, each with its own ``uuid`` and ``memorySlice<i>`` capacities, and a GPU
without MIG as its full device; all devices of the node share one slice.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Final

from gputopo.mocks import mig as mig_tables
from gputopo.mocks.spec import GpuSpec, MachineProfile

DRIVER: Final = "gpu.nvidia.com"
API_VERSION: Final = "resource.k8s.io/v1"
PCI_BUS_ID_ATTRIBUTE: Final = "resource.kubernetes.io/pciBusID"
PCIE_ROOT_ATTRIBUTE: Final = "resource.kubernetes.io/pcieRoot"

# go-nvlib's GetArchitectureAsString for the architectures a profile names.
_ARCHITECTURE_NAMES: Final = {
    "kepler": "Kepler",
    "maxwell": "Maxwell",
    "pascal": "Pascal",
    "volta": "Volta",
    "turing": "Turing",
    "ampere": "Ampere",
    "ada": "Ada Lovelace",
    "hopper": "Hopper",
    "blackwell": "Blackwell",
}


def brand(product_name: str) -> str:
    """go-nvlib's GetBrandAsString for the boards the profiles describe (NVML's brand enum)."""
    if "GeForce" in product_name:
        return "GeForce"
    if "RTX PRO" in product_name or "RTX A" in product_name:
        return "NvidiaRTX"
    return "Nvidia"


def semver(text: str) -> str:
    """Masterminds semver's String() of a dotted version: three parts, no leading zeros."""
    parts = [int(p) for p in text.split(".")[:3]]
    parts += [0] * (3 - len(parts))
    return ".".join(str(p) for p in parts)


def quantity(value: int) -> str:
    """A byte count the way resource.Quantity in BinarySI serialises it (``80Gi``, ``9728Mi``)."""
    for suffix, factor in (("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30)):
        if value and value % factor == 0:
            return f"{value // factor}{suffix}"
    for suffix, factor in (("Mi", 2**20), ("Ki", 2**10)):
        if value and value % factor == 0:
            return f"{value // factor}{suffix}"
    return str(value)


def dns_name(camel: str) -> str:
    """The driver's camelToDNSName: ``copyEngines`` -> ``copy-engines``."""
    hyphenated = re.sub(r"([a-z0-9])([A-Z])", r"\1-\2", camel)
    hyphenated = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1-\2", hyphenated)
    return re.sub(r"[^a-z0-9-.]", "-", hyphenated.lower()).strip("-")


def pcie_root(profile: MachineProfile, gpu: GpuSpec) -> str:
    return profile.host_bridge(gpu.bus_id)


def _gpu_attributes(profile: MachineProfile, gpu: GpuSpec) -> dict[str, dict[str, Any]]:
    major, minor = gpu.compute_capability
    cuda = profile.driver.cuda_version
    return {
        "type": {"string": "gpu"},
        "uuid": {"string": gpu.uuid},
        "productName": {"string": gpu.name},
        "brand": {"string": brand(gpu.name)},
        "architecture": {"string": _ARCHITECTURE_NAMES.get(gpu.architecture, "Unknown")},
        "cudaComputeCapability": {"version": semver(f"{major}.{minor}")},
        "driverVersion": {"version": semver(profile.driver.version)},
        "cudaDriverVersion": {"version": semver(f"{cuda // 1000}.{(cuda % 1000) // 10}")},
        PCI_BUS_ID_ATTRIBUTE: {"string": gpu.bus_id},
        PCIE_ROOT_ATTRIBUTE: {"string": pcie_root(profile, gpu)},
    }


def _mig_attributes(
    profile: MachineProfile, gpu: GpuSpec, profile_name: str
) -> dict[str, dict[str, Any]]:
    attributes = _gpu_attributes(profile, gpu)
    del attributes["uuid"]
    attributes["type"] = {"string": "mig"}
    attributes["parentUUID"] = {"string": gpu.uuid}
    attributes["profile"] = {"string": profile_name}
    return attributes


def _mig_capacities(gi: mig_tables.GpuInstanceProfile) -> dict[str, int]:
    return {
        "multiprocessors": gi.multiprocessors,
        "copyEngines": gi.copy_engines,
        "decoders": gi.decoders,
        "encoders": gi.encoders,
        "jpegEngines": gi.jpegs,
        "ofaEngines": gi.ofas,
        "memory": gi.memory_mib * 2**20,
    }


def _capacity(values: dict[str, int]) -> dict[str, dict[str, str]]:
    return {name: {"value": quantity(value)} for name, value in values.items()}


def mig_device_name(minor: int, gi: mig_tables.GpuInstanceProfile, start: int) -> str:
    profile = dns_name(gi.name.replace(".", "")).replace(".", "")
    return f"gpu-{minor}-mig-{profile}-{gi.id}-{start}"


def counter_set_name(minor: int) -> str:
    return f"gpu-{minor}-counter-set"


def _full_counters(table: mig_tables.MigTable) -> dict[str, int]:
    counters: dict[str, int] = {}
    for gi in table.profiles:
        for name, value in _mig_capacities(gi).items():
            counters[dns_name(name)] = max(counters.get(dns_name(name), 0), value)
    for index in range(max(gi.placement_size for gi in table.profiles)):
        counters[f"memory-slice-{index}"] = 1
    return counters


def _counters(values: dict[str, int]) -> dict[str, dict[str, str]]:
    return {name: {"value": quantity(value)} for name, value in values.items()}


def _partitionable_gpu_devices(
    profile: MachineProfile, gpu: GpuSpec, minor: int
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The devices of one GPU and its counter set (None when the GPU cannot be partitioned)."""
    table = gpu.mig.mig_table() if gpu.mig.capable else None
    if table is None:
        full = {
            "name": f"gpu-{minor}",
            "attributes": _gpu_attributes(profile, gpu),
            "capacity": _capacity({"memory": gpu.memory_mib * 2**20}),
        }
        return [full], None
    full_counters = _full_counters(table)
    set_name = counter_set_name(minor)
    full_capacity = {
        name: max(_mig_capacities(gi)[name] for gi in table.profiles)
        for name in _mig_capacities(table.profiles[0])
    }
    devices: list[dict[str, Any]] = [
        {
            "name": f"gpu-{minor}",
            "attributes": _gpu_attributes(profile, gpu),
            "capacity": _capacity(full_capacity),
            "consumesCounters": [{"counterSet": set_name, "counters": _counters(full_counters)}],
        }
    ]
    for gi in table.profiles:
        for start in gi.placement_starts:
            consumed = {dns_name(k): v for k, v in _mig_capacities(gi).items()}
            for index in range(start, start + gi.placement_size):
                consumed[f"memory-slice-{index}"] = 1
            devices.append(
                {
                    "name": mig_device_name(minor, gi, start),
                    "attributes": _mig_attributes(profile, gpu, gi.name),
                    "capacity": _capacity(_mig_capacities(gi)),
                    "consumesCounters": [{"counterSet": set_name, "counters": _counters(consumed)}],
                }
            )
    devices.sort(key=lambda device: str(device["name"]))
    return devices, {"name": set_name, "counters": _counters(full_counters)}


def mig_uuid(gpu: GpuSpec, gi_id: int, ci_id: int) -> str:
    """The UUID the fake NVML gives a MIG device (gputopo.mocks.fake_pynvml)."""
    return "MIG-" + str(uuid.uuid5(uuid.NAMESPACE_URL, f"{gpu.uuid}/{gi_id}/{ci_id}"))


def _static_gpu_devices(profile: MachineProfile, gpu: GpuSpec, minor: int) -> list[dict[str, Any]]:
    table = gpu.mig.mig_table()
    if not gpu.mig.enabled or table is None:
        return [
            {
                "name": f"gpu-{minor}",
                "attributes": _gpu_attributes(profile, gpu),
                "capacity": _capacity({"memory": gpu.memory_mib * 2**20}),
            }
        ]
    devices: list[dict[str, Any]] = []
    for instance in gpu.mig.instances:
        gi = table.by_name(instance.profile)
        if gi is None:
            continue
        for ci in instance.compute_instances:
            if ci.slices != gi.slices:  # the driver publishes only C == G MIG devices
                continue
            attributes = _mig_attributes(profile, gpu, gi.name)
            attributes["uuid"] = {"string": mig_uuid(gpu, instance.id, ci.id)}
            capacity = _mig_capacities(gi)
            for index in range(
                instance.placement_start, instance.placement_start + gi.placement_size
            ):
                capacity[f"memorySlice{index}"] = 1
            devices.append(
                {
                    "name": mig_device_name(minor, gi, instance.placement_start),
                    "attributes": attributes,
                    "capacity": _capacity(capacity),
                }
            )
    return devices


def _slice(node_name: str, index: int, count: int, generation: int) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "ResourceSlice",
        "metadata": {"name": f"{node_name}-{DRIVER}-{index}"},
        "spec": {
            "driver": DRIVER,
            "nodeName": node_name,
            "pool": {"name": node_name, "generation": generation, "resourceSliceCount": count},
        },
    }


def resource_slices(
    profile: MachineProfile,
    node_name: str | None = None,
    *,
    partitionable: bool = False,
    generation: int = 1,
) -> list[dict[str, Any]]:
    """The ResourceSlices the driver publishes for the profile's node (its pool is the node).

    ``partitionable`` is the driver's DynamicMIG mode (split layout: a counters slice first, then
    one slice per GPU); otherwise one slice holds every device, MIG devices as configured.
    """
    node = node_name or profile.node.hostname
    gpus = profile.nvml_gpus()
    if not gpus:  # the driver's DaemonSet does not run on nodes without NVIDIA GPUs
        return []
    if not partitionable:
        devices = [d for m, g in enumerate(gpus) for d in _static_gpu_devices(profile, g, m)]
        one = _slice(node, 0, 1, generation)
        one["spec"]["devices"] = devices
        return [one]
    per_gpu = [_partitionable_gpu_devices(profile, gpu, minor) for minor, gpu in enumerate(gpus)]
    counter_sets = [counter_set for _, counter_set in per_gpu if counter_set is not None]
    count = len(per_gpu) + (1 if counter_sets else 0)
    slices: list[dict[str, Any]] = []
    if counter_sets:
        counters = _slice(node, 0, count, generation)
        counters["spec"]["sharedCounters"] = counter_sets
        slices.append(counters)
    for devices, _ in per_gpu:
        gpu_slice = _slice(node, len(slices), count, generation)
        gpu_slice["spec"]["devices"] = devices
        slices.append(gpu_slice)
    return slices


def device_classes(
    *, extended_resource_name: str | None = "nvidia.com/gpu"
) -> list[dict[str, Any]]:
    """The DeviceClasses the driver's chart installs: ``gpu.nvidia.com`` and ``mig.nvidia.com``."""

    def device_class(name: str, device_type: str) -> dict[str, Any]:
        expression = (
            f"device.driver == '{DRIVER}' && device.attributes['{DRIVER}'].type == '{device_type}'"
        )
        return {
            "apiVersion": API_VERSION,
            "kind": "DeviceClass",
            "metadata": {"name": name},
            "spec": {"selectors": [{"cel": {"expression": expression}}]},
        }

    gpu = device_class("gpu.nvidia.com", "gpu")
    if extended_resource_name is not None:
        gpu["spec"]["extendedResourceName"] = extended_resource_name
    return [gpu, device_class("mig.nvidia.com", "mig")]
