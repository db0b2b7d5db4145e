"""MIG tables from public `nvidia-smi mig -lgip` captures: the fake answers the driver's names."""

from __future__ import annotations

from pathlib import Path

import pytest

from gputopo.agent.discovery import discover
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


@pytest.mark.parametrize(
    ("table", "names"),
    [
        ("h200-141gb", ["1g.18gb", "1g.18gb+me", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb"]),
        ("b200-180gb", ["1g.23gb", "1g.23gb+me", "1g.45gb", "2g.45gb"]),
        ("gb200-186gb", ["1g.24gb", "1g.24gb+me", "1g.47gb", "2g.47gb"]),
        ("h100-nvl-94gb", ["1g.12gb", "1g.12gb+me", "1g.24gb"]),
    ],
)
def test_tables_hold_the_rows_public_captures_show(table: str, names: list[str]) -> None:
    rows = mig_tables.TABLES[table].profiles
    assert [row.name for row in rows] == names
    assert [row.id for row in rows][:3] == [19, 20, 15]  # as nvidia-smi mig -lgip prints them


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
