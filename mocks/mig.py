"""MIG partition tables: the rows ``nvidia-smi mig -lgip`` prints for each MIG-capable board.

A profile names a table (or it is inferred from the GPU name); the fake NVML answers
``nvmlDeviceGetGpuInstanceProfileInfo`` from it, and profile validation checks that every
declared GPU instance uses a profile and a placement that the board really offers.
"""

from __future__ import annotations

from dataclasses import dataclass

# NVML_GPU_INSTANCE_PROFILE_* enum values (the argument of nvmlDeviceGetGpuInstanceProfileInfo).
GI_PROFILE_1_SLICE = 0x0
GI_PROFILE_2_SLICE = 0x1
GI_PROFILE_3_SLICE = 0x2
GI_PROFILE_4_SLICE = 0x3
GI_PROFILE_7_SLICE = 0x4
GI_PROFILE_1_SLICE_REV1 = 0x7  # 1g with media extensions (+me)
GI_PROFILE_1_SLICE_REV2 = 0x9  # 1g with twice the memory (1g.20gb)

# NVML_COMPUTE_INSTANCE_PROFILE_* enum value for a compute instance of N slices.
CI_PROFILE_FOR_SLICES: dict[int, int] = {1: 0x0, 2: 0x1, 3: 0x2, 4: 0x3, 7: 0x4, 8: 0x5, 6: 0x6}


@dataclass(frozen=True)
class GpuInstanceProfile:
    """One row of ``nvidia-smi mig -lgip``."""

    name: str  # "3g.40gb"
    nvml_profile: int  # NVML_GPU_INSTANCE_PROFILE_* (what callers pass in)
    id: int  # the profile id nvidia-smi shows (what info.id / GI info.profileId carry)
    slices: int
    instance_count: int
    memory_mib: int
    multiprocessors: int
    copy_engines: int
    decoders: int
    encoders: int
    jpegs: int
    ofas: int
    placement_starts: tuple[int, ...]
    placement_size: int


@dataclass(frozen=True)
class MigTable:
    name: str
    memory_slices: int  # placement slots (8 on A100/H100: 7 compute slices, 8 memory slices)
    max_gpu_instances: int
    profiles: tuple[GpuInstanceProfile, ...]

    def by_name(self, name: str) -> GpuInstanceProfile | None:
        for profile in self.profiles:
            if profile.name == name:
                return profile
        return None

    def by_nvml_profile(self, nvml_profile: int) -> GpuInstanceProfile | None:
        for profile in self.profiles:
            if profile.nvml_profile == nvml_profile:
                return profile
        return None

    def by_id(self, profile_id: int) -> GpuInstanceProfile | None:
        for profile in self.profiles:
            if profile.id == profile_id:
                return profile
        return None


def _p(
    name: str,
    nvml_profile: int,
    profile_id: int,
    slices: int,
    count: int,
    memory_mib: int,
    sms: int,
    engines: tuple[int, int, int, int, int],
    starts: tuple[int, ...],
    size: int,
) -> GpuInstanceProfile:
    copy_engines, decoders, encoders, jpegs, ofas = engines
    return GpuInstanceProfile(
        name,
        nvml_profile,
        profile_id,
        slices,
        count,
        memory_mib,
        sms,
        copy_engines,
        decoders,
        encoders,
        jpegs,
        ofas,
        starts,
        size,
    )


_ALL_1G = (0, 1, 2, 3, 4, 5, 6)

# Rows: name, NVML profile, profile id, slices, instances, memory MiB, SMs,
# (copy engines, decoders, encoders, JPEG, OFA), placement starts, placement size.
GI_1G_REV2 = GI_PROFILE_1_SLICE_REV2
# fmt: off
A100_80GB = MigTable(
    name="a100-80gb",
    memory_slices=8,
    max_gpu_instances=7,
    profiles=(
        _p("1g.10gb", GI_PROFILE_1_SLICE, 19, 1, 7, 9728, 14, (1, 0, 0, 0, 0), _ALL_1G, 1),
        _p("1g.10gb+me", GI_PROFILE_1_SLICE_REV1, 20, 1, 1, 9728, 14, (1, 1, 0, 1, 1), _ALL_1G, 1),
        _p("1g.20gb", GI_1G_REV2, 15, 1, 4, 19968, 14, (1, 1, 0, 0, 0), (0, 2, 4, 6), 2),
        _p("2g.20gb", GI_PROFILE_2_SLICE, 14, 2, 3, 19968, 28, (2, 1, 0, 0, 0), (0, 2, 4), 2),
        _p("3g.40gb", GI_PROFILE_3_SLICE, 9, 3, 2, 40192, 42, (3, 2, 0, 0, 0), (0, 4), 4),
        _p("4g.40gb", GI_PROFILE_4_SLICE, 5, 4, 1, 40192, 56, (4, 2, 0, 0, 0), (0,), 4),
        _p("7g.80gb", GI_PROFILE_7_SLICE, 0, 7, 1, 81152, 98, (7, 5, 0, 1, 1), (0,), 8),
    ),
)

A100_40GB = MigTable(
    name="a100-40gb",
    memory_slices=8,
    max_gpu_instances=7,
    profiles=(
        _p("1g.5gb", GI_PROFILE_1_SLICE, 19, 1, 7, 4864, 14, (1, 0, 0, 0, 0), _ALL_1G, 1),
        _p("1g.5gb+me", GI_PROFILE_1_SLICE_REV1, 20, 1, 1, 4864, 14, (1, 1, 0, 1, 1), _ALL_1G, 1),
        _p("1g.10gb", GI_1G_REV2, 15, 1, 4, 9856, 14, (1, 1, 0, 0, 0), (0, 2, 4, 6), 2),
        _p("2g.10gb", GI_PROFILE_2_SLICE, 14, 2, 3, 9856, 28, (2, 1, 0, 0, 0), (0, 2, 4), 2),
        _p("3g.20gb", GI_PROFILE_3_SLICE, 9, 3, 2, 19968, 42, (3, 2, 0, 0, 0), (0, 4), 4),
        _p("4g.20gb", GI_PROFILE_4_SLICE, 5, 4, 1, 19968, 56, (4, 2, 0, 0, 0), (0,), 4),
        _p("7g.40gb", GI_PROFILE_7_SLICE, 0, 7, 1, 40192, 98, (7, 5, 0, 1, 1), (0,), 8),
    ),
)

H100_80GB = MigTable(
    name="h100-80gb",
    memory_slices=8,
    max_gpu_instances=7,
    profiles=(
        _p("1g.10gb", GI_PROFILE_1_SLICE, 19, 1, 7, 9984, 16, (1, 1, 0, 1, 0), _ALL_1G, 1),
        _p("1g.10gb+me", GI_PROFILE_1_SLICE_REV1, 20, 1, 1, 9984, 16, (1, 1, 0, 1, 1), _ALL_1G, 1),
        _p("1g.20gb", GI_1G_REV2, 15, 1, 4, 20224, 26, (1, 1, 0, 1, 0), (0, 2, 4, 6), 2),
        _p("2g.20gb", GI_PROFILE_2_SLICE, 14, 2, 3, 20224, 32, (2, 2, 0, 2, 0), (0, 2, 4), 2),
        _p("3g.40gb", GI_PROFILE_3_SLICE, 9, 3, 2, 40320, 60, (3, 3, 0, 3, 0), (0, 4), 4),
        _p("4g.40gb", GI_PROFILE_4_SLICE, 5, 4, 1, 40320, 64, (4, 4, 0, 4, 0), (0,), 4),
        _p("7g.80gb", GI_PROFILE_7_SLICE, 0, 7, 1, 81152, 132, (8, 7, 0, 7, 1), (0,), 8),
    ),
)

# H200 141GB: the rows of `nvidia-smi mig -lgip` in NVIDIA/mig-parted#120 (memory in GiB there:
# 16.00, 32.25, 69.50; SM, DEC, ENC / CE, JPEG, OFA as printed). Its 7g.141gb row is not in that
# capture, so it is not modelled: a profile cannot place a 7g instance on an H200.
H200_141GB = MigTable(
    name="h200-141gb",
    memory_slices=8,
    max_gpu_instances=7,
    profiles=(
        _p("1g.18gb", GI_PROFILE_1_SLICE, 19, 1, 7, 16384, 16, (1, 1, 0, 1, 0), _ALL_1G, 1),
        _p("1g.18gb+me", GI_PROFILE_1_SLICE_REV1, 20, 1, 1, 16384, 16, (1, 1, 0, 1, 1), _ALL_1G, 1),
        _p("1g.35gb", GI_1G_REV2, 15, 1, 4, 33024, 26, (1, 1, 0, 1, 0), (0, 2, 4, 6), 2),
        _p("2g.35gb", GI_PROFILE_2_SLICE, 14, 2, 3, 33024, 32, (2, 2, 0, 2, 0), (0, 2, 4), 2),
        _p("3g.71gb", GI_PROFILE_3_SLICE, 9, 3, 2, 71168, 60, (3, 3, 0, 3, 0), (0, 4), 4),
        _p("4g.71gb", GI_PROFILE_4_SLICE, 5, 4, 1, 71168, 64, (4, 4, 0, 4, 0), (0,), 4),
    ),
)

# Partial tables: only the rows public `nvidia-smi mig -lgip` captures show in full (id, count,
# GiB, SM, DEC, ENC / CE, JPEG, OFA). `-lgip` prints no placements; they are taken to be the
# A100/H100 ones (8 memory slices). Larger profiles of these boards are not modelled until a
# capture shows them.
# B200: NVIDIA/gpu-operator#1351 (GiB 20.50, 44.25).
B200_180GB = MigTable(
    name="b200-180gb",
    memory_slices=8,
    max_gpu_instances=7,
    profiles=(
        _p("1g.23gb", GI_PROFILE_1_SLICE, 19, 1, 7, 20992, 18, (2, 1, 0, 1, 0), _ALL_1G, 1),
        _p("1g.23gb+me", GI_PROFILE_1_SLICE_REV1, 20, 1, 1, 20992, 18, (2, 1, 0, 1, 1), _ALL_1G, 1),
        _p("1g.45gb", GI_1G_REV2, 15, 1, 4, 45312, 30, (2, 1, 0, 1, 0), (0, 2, 4, 6), 2),
        _p("2g.45gb", GI_PROFILE_2_SLICE, 14, 2, 3, 45312, 36, (4, 2, 0, 2, 0), (0, 2, 4), 2),
    ),
)

# GB200 (HGX GB200): NVIDIA/gpu-operator#1303 (GiB 20.00, 45.50). Not implied by the GPU name,
# so gb200-nvl4 keeps MIG off; a profile names the table to use it.
GB200_186GB = MigTable(
    name="gb200-186gb",
    memory_slices=8,
    max_gpu_instances=7,
    profiles=(
        _p("1g.24gb", GI_PROFILE_1_SLICE, 19, 1, 7, 20480, 18, (2, 1, 0, 1, 0), _ALL_1G, 1),
        _p("1g.24gb+me", GI_PROFILE_1_SLICE_REV1, 20, 1, 1, 20480, 18, (2, 1, 0, 1, 1), _ALL_1G, 1),
        _p("1g.47gb", GI_1G_REV2, 15, 1, 4, 46592, 32, (2, 1, 0, 1, 0), (0, 2, 4, 6), 2),
        _p("2g.47gb", GI_PROFILE_2_SLICE, 14, 2, 3, 46592, 38, (4, 2, 0, 2, 0), (0, 2, 4), 2),
    ),
)

# H100 NVL 94GB: NVIDIA/gpu-operator#903 (GiB 10.75, 21.62).
H100_NVL_94GB = MigTable(
    name="h100-nvl-94gb",
    memory_slices=8,
    max_gpu_instances=7,
    profiles=(
        _p("1g.12gb", GI_PROFILE_1_SLICE, 19, 1, 7, 11008, 16, (1, 1, 0, 1, 0), _ALL_1G, 1),
        _p("1g.12gb+me", GI_PROFILE_1_SLICE_REV1, 20, 1, 1, 11008, 16, (1, 1, 0, 1, 1), _ALL_1G, 1),
        _p("1g.24gb", GI_1G_REV2, 15, 1, 4, 22144, 26, (1, 1, 0, 1, 0), (0, 2, 4, 6), 2),
    ),
)
# fmt: on

TABLES: dict[str, MigTable] = {
    t.name: t
    for t in (A100_80GB, A100_40GB, H100_80GB, H200_141GB, B200_180GB, GB200_186GB, H100_NVL_94GB)
}

# GPU product names whose MIG table is implied when a profile does not name one.
TABLE_FOR_GPU_NAME: dict[str, str] = {
    "NVIDIA A100-SXM4-80GB": "a100-80gb",
    "NVIDIA A100 80GB PCIe": "a100-80gb",
    "NVIDIA A100-SXM4-40GB": "a100-40gb",
    "NVIDIA A100-PCIE-40GB": "a100-40gb",
    "NVIDIA H100 80GB HBM3": "h100-80gb",
    "NVIDIA H100 PCIe": "h100-80gb",
    "NVIDIA H200": "h200-141gb",
    "NVIDIA B200": "b200-180gb",
    "NVIDIA H100 NVL": "h100-nvl-94gb",
}

# Compute-instance sizes NVML offers inside a GPU instance (nvidia-smi mig -lcip).
_CI_SIZES = (1, 2, 3, 4, 6, 7, 8)


def compute_instance_sizes(gi_slices: int) -> tuple[int, ...]:
    return tuple(size for size in _CI_SIZES if size <= gi_slices)


def compute_instance_name(gi_profile: GpuInstanceProfile, ci_slices: int) -> str:
    """``3g.40gb`` for a CI that fills its GI, ``1c.3g.40gb`` for a smaller one."""
    if ci_slices == gi_profile.slices:
        return gi_profile.name
    return f"{ci_slices}c.{gi_profile.name}"


def compute_instance_multiprocessors(gi_profile: GpuInstanceProfile, ci_slices: int) -> int:
    return gi_profile.multiprocessors * ci_slices // gi_profile.slices
