"""A GPU's MIG layout as NVML reports it, named the way GPU Feature Discovery names it.

GFD (through go-nvlib) walks the MIG devices — one per compute instance — groups them by GPU
instance and names each profile from its slice count and its rounded share of the GPU's memory
("3g.40gb", "1c.3g.40gb", "1g.10gb+me"); the ``nvidia.com/mig-<profile>.count`` labels depend on
those exact names.
"""

from __future__ import annotations

import math
from typing import Any

from gputopo.agent.nvml.session import NOT_SUPPORTED, GpuQuery, text
from gputopo.agent.topology import ComputeInstance, GpuInstance, MigInfo

_MIG_ENABLE = 1
_GI_PROFILE_COUNT_FALLBACK = 0x12
# GPU-instance profile indices that carry media extensions ("+me"), as go-nvlib names them.
_MEDIA_EXTENSION_PROFILES = (0x7, 0x8)  # 1_SLICE_REV1, 2_SLICE_REV1


def mig_memory_gb(device_memory_bytes: int, mig_memory_mib: int) -> int:
    """go-nvlib's rounding: the slice's share of the GPU in eighths, times the GPU size in GB."""
    one_mib = 1024 * 1024
    one_gib = 1024 * 1024 * 1024
    fraction = (mig_memory_mib * one_mib) / device_memory_bytes
    fraction = math.ceil(fraction * 8) / 8
    total_gb = (device_memory_bytes + one_gib - 1) // one_gib
    return round(fraction * total_gb)


def mig_profile_name(
    gpu_slices: int, memory_gb: int, compute_slices: int | None = None, media: bool = False
) -> str:
    """ "3g.40gb", "1c.3g.40gb" when the compute instance is smaller, "+me" for media engines."""
    suffix = "+me" if media else ""
    if compute_slices is None or compute_slices == gpu_slices:
        return f"{gpu_slices}g.{memory_gb}gb{suffix}"
    return f"{compute_slices}c.{gpu_slices}g.{memory_gb}gb{suffix}"


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
    """GPU-instance profile id -> (profile index, profile info), like GFD scans them."""
    profiles: dict[int, tuple[int, Any]] = {}
    count = int(
        getattr(query.module, "NVML_GPU_INSTANCE_PROFILE_COUNT", _GI_PROFILE_COUNT_FALLBACK)
    )
    for profile_index in range(count):
        info = query.device("nvmlDeviceGetGpuInstanceProfileInfo", profile_index)
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
    name = "unknown"
    if slices is not None and memory_mib is not None and memory_bytes:
        name = mig_profile_name(
            slices,
            mig_memory_gb(memory_bytes, memory_mib),
            media=profile_index in _MEDIA_EXTENSION_PROFILES,
        )
    compute_instances = []
    for ci_id, attributes, mig_uuid in sorted(devices, key=lambda d: d[0]):
        ci_slices = _attr_int(attributes, "computeInstanceSliceCount")
        ci_name = name
        if name != "unknown" and ci_slices is not None and slices is not None:
            ci_name = mig_profile_name(
                slices,
                mig_memory_gb(memory_bytes or 1, memory_mib or 0),
                compute_slices=ci_slices,
                media=profile_index in _MEDIA_EXTENSION_PROFILES,
            )
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
