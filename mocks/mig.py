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
GI_PROFILE_1_SLICE_GFX = 0xA  # graphics (+gfx), RTX PRO Blackwell
GI_PROFILE_2_SLICE_GFX = 0xB
GI_PROFILE_4_SLICE_GFX = 0xC
GI_PROFILE_1_SLICE_NO_ME = 0xD  # no media engines (-me)
GI_PROFILE_2_SLICE_NO_ME = 0xE
GI_PROFILE_1_SLICE_ALL_ME = 0xF  # all the GPU's media engines (+me.all)
GI_PROFILE_2_SLICE_ALL_ME = 0x10

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

# The tables below hold exactly the rows NVIDIA's MIG User Guide lists for each board
# (docs.nvidia.com/datacenter/tesla/mig-user-guide/supported-mig-profiles.html, "Supported MIG
# Profiles": name, fractions of memory and SMs, NVDEC/NVENC/JPEG/OFA, copy engines, instances).
# The guide gives fractions, not MiB, SMs or profile ids: those come from public
# `nvidia-smi mig -lgip` captures where one shows the row. A row no capture shows (each table's
# comment names them) has the guide's memory fraction of the board's memory as NVML reports it,
# the SMs of its slices (the whole GPU's for a "Full" row), the usual profile id and the A100/H100
# placements (8 memory slices; `-lgip` prints none). A capture beats the guide where they differ.
# fmt: off

# H200 141GB (board 143771 MiB): rows 1-6 from NVIDIA/mig-parted#120 (GiB 16.00, 32.25, 69.50);
# 7g.141gb from a public capture (140.00 GiB, 132 SMs, CE 8, DEC 7, JPEG 7, OFA 1, id 0).
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
        _p("7g.141gb", GI_PROFILE_7_SLICE, 0, 7, 1, 143360, 132, (8, 7, 0, 7, 1), (0,), 8),
    ),
)

# B200 180GB (board 183359 MiB): 1g rows and 2g.45gb from NVIDIA/gpu-operator#1351 (GiB 20.50,
# 44.25; its 2g.45gb shows CE 4, DEC 2, JPEG 2 where the guide says 3, 1, 1); 3g, 4g and 7g from
# the guide (CE 6, 8, 16; one NVDEC and JPEG each; OFA on 7g only; SMs 18 a slice, 148 for 7g).
B200_180GB = MigTable(
    name="b200-180gb",
    memory_slices=8,
    max_gpu_instances=7,
    profiles=(
        _p("1g.23gb", GI_PROFILE_1_SLICE, 19, 1, 7, 20992, 18, (2, 1, 0, 1, 0), _ALL_1G, 1),
        _p("1g.23gb+me", GI_PROFILE_1_SLICE_REV1, 20, 1, 1, 20992, 18, (2, 1, 0, 1, 1), _ALL_1G, 1),
        _p("1g.45gb", GI_1G_REV2, 15, 1, 4, 45312, 30, (2, 1, 0, 1, 0), (0, 2, 4, 6), 2),
        _p("2g.45gb", GI_PROFILE_2_SLICE, 14, 2, 3, 45312, 36, (4, 2, 0, 2, 0), (0, 2, 4), 2),
        _p("3g.90gb", GI_PROFILE_3_SLICE, 9, 3, 2, 91679, 54, (6, 1, 0, 1, 0), (0, 4), 4),
        _p("4g.90gb", GI_PROFILE_4_SLICE, 5, 4, 1, 91679, 72, (8, 1, 0, 1, 0), (0,), 4),
        _p("7g.180gb", GI_PROFILE_7_SLICE, 0, 7, 1, 183359, 148, (16, 1, 0, 1, 1), (0,), 8),
    ),
)

# GB200 (HGX GB200): the guide has no GB200 table, so this stays the partial one of
# NVIDIA/gpu-operator#1303 (GiB 20.00, 45.50): larger profiles are not modelled until a public
# table shows them. Not implied by the GPU name, so gb200-nvl4 keeps MIG off; a profile names the
# table to use it.
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

# H100 NVL 94GB (the guide's "H100 94GB" table; board 95830 MiB): 1g rows from
# NVIDIA/gpu-operator#903 (GiB 10.75, 21.62); the rest from the guide, SMs as the H100 80GB rows
# (the same GH100 partitioning).
H100_NVL_94GB = MigTable(
    name="h100-nvl-94gb",
    memory_slices=8,
    max_gpu_instances=7,
    profiles=(
        _p("1g.12gb", GI_PROFILE_1_SLICE, 19, 1, 7, 11008, 16, (1, 1, 0, 1, 0), _ALL_1G, 1),
        _p("1g.12gb+me", GI_PROFILE_1_SLICE_REV1, 20, 1, 1, 11008, 16, (1, 1, 0, 1, 1), _ALL_1G, 1),
        _p("1g.24gb", GI_1G_REV2, 15, 1, 4, 22144, 26, (1, 1, 0, 1, 0), (0, 2, 4, 6), 2),
        _p("2g.24gb", GI_PROFILE_2_SLICE, 14, 2, 3, 23957, 32, (2, 2, 0, 2, 0), (0, 2, 4), 2),
        _p("3g.47gb", GI_PROFILE_3_SLICE, 9, 3, 2, 47915, 60, (3, 3, 0, 3, 0), (0, 4), 4),
        _p("4g.47gb", GI_PROFILE_4_SLICE, 5, 4, 1, 47915, 64, (4, 4, 0, 4, 0), (0,), 4),
        _p("7g.94gb", GI_PROFILE_7_SLICE, 0, 7, 1, 95830, 132, (8, 7, 0, 7, 1), (0,), 8),
    ),
)

# RTX PRO 6000 Blackwell (Workstation, Max-Q and Server Edition 96GB): four memory slices, every
# suffix NVML defines. Ids, GiB (23.62, 47.38, 95.00), SMs (46, 94, 188) and engines from public
# `nvidia-smi mig -lgip` captures, which agree with the guide's rows; placements are the four
# quarters (1g), the halves (2g) and the whole GPU (4g).
_Q = (0, 1, 2, 3)
_ME_ALL_1 = GI_PROFILE_1_SLICE_ALL_ME
_ME_ALL_2 = GI_PROFILE_2_SLICE_ALL_ME
RTX_PRO_6000_96GB = MigTable(
    name="rtx-pro-6000-96gb",
    memory_slices=4,
    max_gpu_instances=4,
    profiles=(
        _p("1g.24gb", GI_PROFILE_1_SLICE, 14, 1, 4, 24187, 46, (1, 1, 1, 1, 0), _Q, 1),
        _p("1g.24gb+me", GI_PROFILE_1_SLICE_REV1, 21, 1, 1, 24187, 46, (1, 1, 1, 1, 1), _Q, 1),
        _p("1g.24gb+gfx", GI_PROFILE_1_SLICE_GFX, 47, 1, 4, 24187, 46, (1, 1, 1, 1, 0), _Q, 1),
        _p("1g.24gb+me.all", _ME_ALL_1, 65, 1, 1, 24187, 46, (1, 4, 4, 4, 1), _Q, 1),
        _p("1g.24gb-me", GI_PROFILE_1_SLICE_NO_ME, 67, 1, 4, 24187, 46, (1, 0, 0, 0, 0), _Q, 1),
        _p("2g.48gb", GI_PROFILE_2_SLICE, 5, 2, 2, 48517, 94, (2, 2, 2, 2, 0), (0, 2), 2),
        _p("2g.48gb+gfx", GI_PROFILE_2_SLICE_GFX, 35, 2, 2, 48517, 94, (2, 2, 2, 2, 0), (0, 2), 2),
        _p("2g.48gb+me.all", _ME_ALL_2, 64, 2, 1, 48517, 94, (2, 4, 4, 4, 1), (0, 2), 2),
        _p("2g.48gb-me", GI_PROFILE_2_SLICE_NO_ME, 66, 2, 2, 48517, 94, (2, 0, 0, 0, 0), (0, 2), 2),
        _p("4g.96gb", GI_PROFILE_4_SLICE, 0, 4, 1, 97280, 188, (4, 4, 4, 4, 1), (0,), 4),
        _p("4g.96gb+gfx", GI_PROFILE_4_SLICE_GFX, 32, 4, 1, 97280, 188, (4, 4, 4, 4, 1), (0,), 4),
    ),
)
# fmt: on

TABLES: dict[str, MigTable] = {
    t.name: t
    for t in (
        A100_80GB,
        A100_40GB,
        H100_80GB,
        H200_141GB,
        B200_180GB,
        GB200_186GB,
        H100_NVL_94GB,
        RTX_PRO_6000_96GB,
    )
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
    "NVIDIA RTX PRO 6000 Blackwell Server Edition": "rtx-pro-6000-96gb",
    "NVIDIA RTX PRO 6000 Blackwell Workstation Edition": "rtx-pro-6000-96gb",
    "NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition": "rtx-pro-6000-96gb",
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
