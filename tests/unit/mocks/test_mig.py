"""MIG tables from NVIDIA's MIG User Guide and public `nvidia-smi mig -lgip` captures."""

from __future__ import annotations

from pathlib import Path

import pytest

from gputopo.agent.discovery import discover
from gputopo.agent.nvml.mig import mig_memory_gb
from gputopo.mocks import mig as mig_tables
from gputopo.mocks.fake_pynvml import make_fake_pynvml
from gputopo.mocks.profile import load_profile
from gputopo.mocks.sysfs import build_sysfs

B200 = """\
node: {hostname: b200}
gpus:
  - bus_id: "0000:1b:00.0"
    name: NVIDIA B200
    memory_mib: 183359
    compute_capability: "10.0"
    architecture: blackwell
    pci_device_id: 0x2901
    mig: {capable: true, mode: enabled, instances: [2g.45gb, 1g.45gb, 1g.23gb, 1g.23gb+me]}
"""


# Every row of NVIDIA's MIG User Guide, "Supported MIG Profiles", as (name, instances).
GUIDE_ROWS: dict[str, list[tuple[str, int]]] = {
    "h200-141gb": [
        ("1g.18gb", 7), ("1g.18gb+me", 1), ("1g.35gb", 4), ("2g.35gb", 3),
        ("3g.71gb", 2), ("4g.71gb", 1), ("7g.141gb", 1),
    ],
    "b200-180gb": [
        ("1g.23gb", 7), ("1g.23gb+me", 1), ("1g.45gb", 4), ("2g.45gb", 3),
        ("3g.90gb", 2), ("4g.90gb", 1), ("7g.180gb", 1),
    ],
    "h100-nvl-94gb": [
        ("1g.12gb", 7), ("1g.12gb+me", 1), ("1g.24gb", 4), ("2g.24gb", 3),
        ("3g.47gb", 2), ("4g.47gb", 1), ("7g.94gb", 1),
    ],
    "rtx-pro-6000-96gb": [
        ("1g.24gb", 4), ("1g.24gb+me", 1), ("1g.24gb+gfx", 4), ("1g.24gb+me.all", 1),
        ("1g.24gb-me", 4), ("2g.48gb", 2), ("2g.48gb+gfx", 2), ("2g.48gb+me.all", 1),
        ("2g.48gb-me", 2), ("4g.96gb", 1), ("4g.96gb+gfx", 1),
    ],
}  # fmt: skip
# The board's memory as NVML reports it (MiB), for the computed-name fallback below.
BOARD_MIB = {
    "h200-141gb": 143771,
    "b200-180gb": 183359,
    "h100-nvl-94gb": 95830,
    "rtx-pro-6000-96gb": 97887,
}


@pytest.mark.parametrize("table", sorted(GUIDE_ROWS))
def test_tables_hold_exactly_the_rows_the_mig_user_guide_lists(table: str) -> None:
    rows = mig_tables.TABLES[table].profiles
    assert [(row.name, row.instance_count) for row in rows] == GUIDE_ROWS[table]


@pytest.mark.parametrize("table", sorted(GUIDE_ROWS))
def test_names_computed_from_table_memory_match_the_guide(table: str) -> None:
    """A driver before R470 has no v2 name: the agent's rounding must give the guide's name."""
    board = BOARD_MIB[table] * 1024 * 1024
    for row in mig_tables.TABLES[table].profiles:
        gb = mig_memory_gb(board, row.memory_mib)
        assert row.name.startswith(f"{row.slices}g.{gb}gb"), row.name


def test_table_rows_fit_their_boards_slices() -> None:
    for table in mig_tables.TABLES.values():
        for row in table.profiles:
            assert row.instance_count <= table.max_gpu_instances
            assert all(s + row.placement_size <= table.memory_slices for s in row.placement_starts)


def test_h200_has_7g_141gb_and_b200_1g_23gb() -> None:
    assert mig_tables.TABLES["h200-141gb"].by_name("7g.141gb") is not None
    assert mig_tables.TABLES["b200-180gb"].by_name("1g.23gb") is not None
    assert mig_tables.TABLES["b200-180gb"].by_name("7g.180gb") is not None


def test_gb200_keeps_only_the_rows_a_public_capture_shows() -> None:
    """The MIG User Guide has no GB200 table; the rows are those of NVIDIA/gpu-operator#1303."""
    rows = mig_tables.TABLES["gb200-186gb"].profiles
    assert [row.name for row in rows] == ["1g.24gb", "1g.24gb+me", "1g.47gb", "2g.47gb"]
    assert [row.id for row in rows][:3] == [19, 20, 15]  # as nvidia-smi mig -lgip prints them


RTX_PRO = """\
node: {hostname: rtx}
gpus:
  - bus_id: "0000:17:00.0"
    name: NVIDIA RTX PRO 6000 Blackwell Server Edition
    memory_mib: 97887
    compute_capability: "12.0"
    architecture: blackwell
    pci_device_id: 0x2bb5
    mig: {capable: true, mode: enabled, instances: [2g.48gb-me, 1g.24gb+gfx, 1g.24gb+me.all]}
"""


def test_rtx_pro_6000_mig_devices_carry_every_suffix_nvml_defines(tmp_path: Path) -> None:
    path = tmp_path / "rtx.yaml"
    path.write_text(RTX_PRO)
    profile = load_profile(str(path))
    topology = discover(make_fake_pynvml(profile), build_sysfs(profile, tmp_path / "sys"), "r")
    assert [gi.profile for gi in topology.gpus[0].mig.instances] == [
        "2g.48gb-me",
        "1g.24gb+gfx",
        "1g.24gb+me.all",
    ]


def test_b200_mig_devices_carry_the_drivers_names_1g_23gb_not_22gb(tmp_path: Path) -> None:
    path = tmp_path / "b200.yaml"
    path.write_text(B200)
    profile = load_profile(str(path))
    topology = discover(make_fake_pynvml(profile), build_sysfs(profile, tmp_path / "sys"), "b")
    assert [gi.profile for gi in topology.gpus[0].mig.instances] == [
        "2g.45gb",
        "1g.45gb",
        "1g.23gb",
        "1g.23gb+me",
    ]
