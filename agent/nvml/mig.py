"""A GPU's MIG layout as NVML reports it, named the way the driver names it.

GFD (through go-nvlib) walks the MIG devices — one per compute instance — and groups them by GPU
instance; the ``nvidia.com/mig-<profile>.count`` labels and the device plugin's resource names
depend on the profile names ("3g.40gb", "1c.3g.40gb", "1g.10gb+me"). The name is the driver's
own (the v2 profile info's ``name``, "MIG 3g.71gb"); only a driver without the v2 call (before
R470) has it computed from the slice count and the memory share, rounded half *up* as NVIDIA
rounds (Python's ``round`` rounds halves to even: H200 "3g.71gb" would come out "3g.70gb").
"""

from __future__ import annotations

import math
import re
from typing import Any

from gputopo.agent.nvml.session import FUNCTION_NOT_FOUND, NOT_SUPPORTED, GpuQuery, text
from gputopo.agent.topology import ComputeInstance, GpuInstance, MigInfo

_MIG_ENABLE = 1
_GI_PROFILE_COUNT_FALLBACK = 0x12
# NVML_GPU_INSTANCE_PROFILE_* index -> the attribute suffix go-nvlib gives its name: REV1 media
# extensions, ALL_ME all of the GPU's media engines, GFX graphics, NO_ME none (a negative one).
PROFILE_SUFFIXES: dict[int, str] = {
    0x7: "+me",  # 1_SLICE_REV1
    0x8: "+me",  # 2_SLICE_REV1
    0xA: "+gfx",  # 1_SLICE_GFX
    0xB: "+gfx",  # 2_SLICE_GFX
    0xC: "+gfx",  # 4_SLICE_GFX
    0xD: "-me",  # 1_SLICE_NO_ME
    0xE: "-me",  # 2_SLICE_NO_ME
    0xF: "+me.all",  # 1_SLICE_ALL_ME
    0x10: "+me.all",  # 2_SLICE_ALL_ME
    0x11: "+gfx",  # 3_SLICE_GFX
}
# What the driver's v2 profile name holds after "MIG ": "3g.71gb", "1g.10gb+me", "1g.24gb-me".
_DRIVER_NAME = re.compile(r"(?:MIG )?(\d+g\.\d+gb(?:\+me\.all|\+me|\+gfx|-me)?)")


def mig_memory_gb(device_memory_bytes: int, mig_memory_mib: int) -> int:
    """go-nvlib's rounding: the slice's share of the GPU in eighths, times the GPU size in GB."""
    one_mib = 1024 * 1024
    one_gib = 1024 * 1024 * 1024
    fraction = (mig_memory_mib * one_mib) / device_memory_bytes
    fraction = math.ceil(fraction * 8) / 8
    total_gb = (device_memory_bytes + one_gib - 1) // one_gib
    return math.floor(fraction * total_gb + 0.5)  # half up: 70.5 -> 71, as NVIDIA names it


def mig_profile_name(
    gpu_slices: int,
    memory_gb: int,
    compute_slices: int | None = None,
    media: bool = False,
    suffix: str = "",
) -> str:
    """ "3g.40gb", "1c.3g.40gb" when the compute instance is smaller; ``suffix`` one of
    :data:`PROFILE_SUFFIXES` ("+me" also by ``media``)."""
    suffix = suffix or ("+me" if media else "")
    if compute_slices is None or compute_slices == gpu_slices:
        return f"{gpu_slices}g.{memory_gb}gb{suffix}"
    return f"{compute_slices}c.{gpu_slices}g.{memory_gb}gb{suffix}"


def driver_profile_name(info: Any) -> str | None:
    """The v2 profile info's own name without its "MIG " prefix; None for a v1 struct (no
    name) or a name this agent does not know the shape of."""
    raw = getattr(info, "name", None)
    if not raw:
        return None
    match = _DRIVER_NAME.fullmatch(text(raw).strip())
    return match.group(1) if match else None


def compute_instance_name(gpu_instance_name: str, gpu_slices: int, compute_slices: int) -> str:
    """ "1c.3g.71gb+me" for a compute instance smaller than its GPU instance "3g.71gb+me"."""
    if compute_slices == gpu_slices:
        return gpu_instance_name
    return f"{compute_slices}c.{gpu_instance_name}"


def read_mig(query: GpuQuery, memory_bytes: int | None) -> MigInfo:
    """The GPU's MIG mode and, when enabled, its GPU and compute instances."""
    modes = query.device("nvmlDeviceGetMigMode")
    if modes is None:
        capable = False if query.last_code == NOT_SUPPORTED else None
        return MigInfo(capable=capable)
    current, pending = int(modes[0]), int(modes[1])
    enabled = current == _MIG_ENABLE
    info = MigInfo(capable=True, enabled=enabled, pending=pending == _MIG_ENABLE)
    if not enabled:
        return info
    max_count = query.device("nvmlDeviceGetMaxMigDeviceCount")
    if max_count is None:
        return info
    # MIG devices (one per compute instance), grouped by their GPU instance: GFD's walk.
    by_gi: dict[int, list[tuple[int, Any, str | None]]] = {}
    for mig_index in range(int(max_count)):
        mig = query.device("nvmlDeviceGetMigDeviceHandleByIndex", mig_index)
        if mig is None:
            continue
        gi_id = query.call("nvmlDeviceGetGpuInstanceId", mig)
        ci_id = query.call("nvmlDeviceGetComputeInstanceId", mig)
        attributes = query.call("nvmlDeviceGetAttributes", mig)
        mig_uuid = query.call("nvmlDeviceGetUUID", mig)
        if gi_id is None or ci_id is None:
            continue
        by_gi.setdefault(int(gi_id), []).append(
            (int(ci_id), attributes, text(mig_uuid) if mig_uuid is not None else None)
        )
    profiles = _gi_profiles(query) if by_gi else {}
    instances = []
    for gi_id in sorted(by_gi):
        instances.append(_gpu_instance(query, gi_id, by_gi[gi_id], profiles, memory_bytes))
    return MigInfo(
        capable=True,
        enabled=True,
        pending=pending == _MIG_ENABLE,
        instances=tuple(instances),
    )


def _gi_profiles(query: GpuQuery) -> dict[int, tuple[int, Any]]:
    """GPU-instance profile id -> (profile index, profile info), like GFD scans them: the v2
    info (with the driver's name), or v1 where the driver has no v2 call (FUNCTION_NOT_FOUND)."""
    profiles: dict[int, tuple[int, Any]] = {}
    count = int(
        getattr(query.module, "NVML_GPU_INSTANCE_PROFILE_COUNT", _GI_PROFILE_COUNT_FALLBACK)
    )
    version = 2
    for profile_index in range(count):
        info = query.device("nvmlDeviceGetGpuInstanceProfileInfo", profile_index, version)
        if info is None and query.last_code == FUNCTION_NOT_FOUND and version == 2:
            version = 1
            info = query.device("nvmlDeviceGetGpuInstanceProfileInfo", profile_index, version)
        if info is None:
            if query.lost:
                break
            continue
        profiles.setdefault(int(info.id), (profile_index, info))
    return profiles


def _gpu_instance(
    query: GpuQuery,
    gi_id: int,
    devices: list[tuple[int, Any, str | None]],
    profiles: dict[int, tuple[int, Any]],
    memory_bytes: int | None,
) -> GpuInstance:
    gi_handle = query.device("nvmlDeviceGetGpuInstanceById", gi_id)
    gi_info = query.call("nvmlGpuInstanceGetInfo", gi_handle) if gi_handle is not None else None
    profile_id = int(gi_info.profileId) if gi_info is not None else None
    placement_start = placement_size = None
    if gi_info is not None:
        placement_start = int(gi_info.placement.start)
        placement_size = int(gi_info.placement.size)
    profile_index, profile = (
        profiles.get(profile_id, (None, None)) if profile_id is not None else (None, None)
    )
    first_attributes = next((a for _, a, _ in devices if a is not None), None)
    slices = _attr_int(profile, "sliceCount") or _attr_int(
        first_attributes, "gpuInstanceSliceCount"
    )
    memory_mib = _attr_int(profile, "memorySizeMB") or _attr_int(first_attributes, "memorySizeMB")
    name = (driver_profile_name(profile) if profile is not None else None) or "unknown"
    if name == "unknown" and slices is not None and memory_mib is not None and memory_bytes:
        name = mig_profile_name(
            slices,
            mig_memory_gb(memory_bytes, memory_mib),
            suffix=PROFILE_SUFFIXES.get(profile_index, "") if profile_index is not None else "",
        )
    compute_instances = []
    for ci_id, attributes, mig_uuid in sorted(devices, key=lambda d: d[0]):
        ci_slices = _attr_int(attributes, "computeInstanceSliceCount")
        ci_name = name
        if name != "unknown" and ci_slices is not None and slices is not None:
            ci_name = compute_instance_name(name, slices, ci_slices)
        compute_instances.append(
            ComputeInstance(
                id=ci_id,
                profile=ci_name,
                slices=ci_slices,
                multiprocessors=_attr_int(attributes, "multiprocessorCount"),
                uuid=mig_uuid,
            )
        )
    return GpuInstance(
        id=gi_id,
        profile=name,
        profile_id=profile_id,
        placement_start=placement_start,
        placement_size=placement_size,
        slices=slices,
        memory_mib=memory_mib,
        multiprocessors=_attr_int(profile, "multiprocessorCount"),
        copy_engines=_attr_int(profile, "copyEngineCount"),
        decoders=_attr_int(profile, "decoderCount"),
        encoders=_attr_int(profile, "encoderCount"),
        jpegs=_attr_int(profile, "jpegCount"),
        ofas=_attr_int(profile, "ofaCount"),
        compute_instances=tuple(compute_instances),
    )


def _attr_int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    attribute = getattr(value, name, None)
    return int(attribute) if attribute is not None else None
