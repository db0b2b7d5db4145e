from __future__ import annotations

from pathlib import Path

import pytest

from gputopo.agent.sysfs import (
    SysfsReader,
    nearest_pcie_switch,
    normalize_bus_id,
    parse_link_speed,
    salvage_cpulist,
)
from gputopo.core.grammar import format_cpulist
from tests.unit.agent.agent_fixtures import PciFunction, build_tree

SWITCHED_GPU = PciFunction(
    "0000:18:00.0", parents=("0000:15:01.0", "0000:16:00.0", "0000:17:00.0"), numa_node=0
)
SWITCHED_NIC = PciFunction(
    "0000:19:00.0",
    parents=("0000:15:01.0", "0000:16:00.0", "0000:17:01.0"),
    vendor="0x15b3",
    device="0x1021",
    pci_class="0x020700",
    driver="mlx5_core",
)
DIRECT_GPU = PciFunction(
    "0000:ca:00.0", parents=("0000:c9:01.0",), numa_node=1, local_cpulist="4-7", driver=None
)


@pytest.fixture
def dgx_like_tree(tmp_path: Path) -> Path:
    return build_tree(
        tmp_path / "sys",
        [SWITCHED_GPU, SWITCHED_NIC, DIRECT_GPU],
        numa={0: ("0-3", "10 21", 1024), 1: ("4-7", "21 10", 2048)},
        infiniband={"mlx5_0": ("0000:19:00.0", ("ibp25s0",))},
        dmi=("DGXH100", "NVIDIA"),
    )


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("0-3,8,10-11", (0, 1, 2, 3, 8, 10, 11)), ("", ()), ("5", (5,)), ("0-1,x,3", (0, 1, 3))],
)
def test_cpulist_parses_ranges_and_skips_garbage(text: str, cpus: tuple[int, ...]) -> None:
    assert salvage_cpulist(text) == cpus


def test_cpulist_formats_compact_ranges() -> None:
    assert format_cpulist(tuple(range(56)) + tuple(range(112, 168))) == "0-55,112-167"
    assert format_cpulist((3, 1, 2, 7)) == "1-3,7"
    assert format_cpulist(()) == ""


@pytest.mark.parametrize(
    ("speed", "gen"),
    [
        ("32.0 GT/s PCIe", 5),
        ("16.0 GT/s PCIe", 4),
        ("8 GT/s", 3),
        ("5.0 GT/s PCIe", 2),
        ("2.5 GT/s PCIe", 1),
        ("64.0 GT/s PCIe", 6),
        ("Unknown", None),
        ("3.3 GT/s", None),
    ],
)
def test_link_speed_maps_to_pcie_generation(speed: str, gen: int | None) -> None:
    assert parse_link_speed(speed) == gen


def test_nvml_bus_id_is_normalised_to_sysfs_form() -> None:
    assert normalize_bus_id("00000000:18:00.0") == "0000:18:00.0"
    assert normalize_bus_id("00000000:CA:00.0") == "0000:ca:00.0"
    assert normalize_bus_id("0000:ca:00.0") == "0000:ca:00.0"


def test_nearest_switch_is_two_hops_above_the_device() -> None:
    assert nearest_pcie_switch(("rp", "up", "down")) == "up"
    assert nearest_pcie_switch(("rp", "up", "down", "up2", "down2")) == "up2"
    assert nearest_pcie_switch(("rp",)) is None
    assert nearest_pcie_switch(("rp", "bridge")) is None


def test_gpus_found_with_path_switch_numa_and_link(dgx_like_tree: Path) -> None:
    gpus = SysfsReader(dgx_like_tree).nvidia_gpus()
    assert [g.pci_bus_id for g in gpus] == ["0000:18:00.0", "0000:ca:00.0"]
    switched, direct = gpus
    assert switched.pci_path == ("0000:15:01.0", "0000:16:00.0", "0000:17:00.0")
    assert switched.pcie_switch == "0000:16:00.0"
    assert switched.numa_node == 0
    assert switched.local_cpus == (0, 1, 2, 3)
    assert (switched.link_gen_current, switched.link_width_current) == (5, 16)
    assert switched.driver == "nvidia"
    assert direct.pcie_switch is None
    assert direct.driver is None
    assert direct.numa_node == 1


def test_rdma_nic_has_netdevs_and_the_gpus_switch(dgx_like_tree: Path) -> None:
    (nic,) = SysfsReader(dgx_like_tree).rdma_nics()
    assert nic.name == "mlx5_0"
    assert nic.pci_bus_id == "0000:19:00.0"
    assert nic.netdevs == ("ibp25s0",)
    assert nic.pcie_switch == "0000:16:00.0"


def test_numa_nodes_with_distances_and_memory(dgx_like_tree: Path) -> None:
    nodes = SysfsReader(dgx_like_tree).numa_nodes()
    assert [(n.id, n.cpus, n.distances) for n in nodes] == [
        (0, (0, 1, 2, 3), (10, 21)),
        (1, (4, 5, 6, 7), (21, 10)),
    ]
    assert nodes[1].memory_total_bytes == 2048 * 1024


def test_cpu_less_numa_node_is_described_not_crashed_on(tmp_path: Path) -> None:
    root = build_tree(
        tmp_path / "sys",
        [],
        numa={0: ("0-71", "10 80", 1024), 1: ("", "80 10", 4096)},
    )
    nodes = SysfsReader(root).numa_nodes()
    assert nodes[1].cpus == ()
    assert nodes[1].memory_total_bytes == 4096 * 1024


def test_dmi_identity(dgx_like_tree: Path) -> None:
    assert SysfsReader(dgx_like_tree).dmi() == ("DGXH100", "NVIDIA")


def test_missing_and_unreadable_files_become_unknown(tmp_path: Path) -> None:
    gpu = PciFunction("0000:18:00.0", extra={"numa_node": "-1"})
    root = build_tree(tmp_path / "sys", [gpu])
    device_dir = (root / "bus" / "pci" / "devices" / "0000:18:00.0").resolve()
    (device_dir / "current_link_speed").write_text("Unknown\n")
    (device_dir / "local_cpulist").unlink()
    (device_dir / "max_link_width").write_text("garbage\n")
    (device_gpu,) = SysfsReader(root).nvidia_gpus()
    assert device_gpu.numa_node is None
    assert device_gpu.local_cpus == ()
    assert device_gpu.link_gen_current is None
    assert device_gpu.link_width_max is None
    reader = SysfsReader(root)
    assert reader.numa_nodes() == []
    assert reader.rdma_nics() == []
    assert reader.dmi() == (None, None)


def test_empty_or_missing_root_yields_nothing(tmp_path: Path) -> None:
    reader = SysfsReader(tmp_path / "nowhere")
    assert reader.nvidia_gpus() == []
    assert reader.numa_nodes() == []
    assert not reader.is_valid_root()


def test_non_nvidia_and_non_gpu_functions_are_ignored(tmp_path: Path) -> None:
    root = build_tree(
        tmp_path / "sys",
        [
            PciFunction("0000:01:00.0", vendor="0x8086", pci_class="0x030000"),
            PciFunction("0000:02:00.1", pci_class="0x040300"),  # NVIDIA HDMI audio
            PciFunction("0000:03:00.0", pci_class="0x030000", device="0x2684"),  # VGA RTX 4090
        ],
    )
    assert [g.pci_bus_id for g in SysfsReader(root).nvidia_gpus()] == ["0000:03:00.0"]


def test_absolute_sys_links_in_a_hand_built_tree_are_rerooted(tmp_path: Path) -> None:
    root = tmp_path / "sys"
    device = root / "devices" / "pci0000:15" / "0000:15:01.0" / "0000:16:00.0"
    device.mkdir(parents=True)
    (device / "vendor").write_text("0x10de\n")
    (device / "class").write_text("0x030200\n")
    (root / "devices" / "pci0000:15" / "0000:15:01.0" / "class").write_text("0x060400\n")
    links = root / "bus" / "pci" / "devices"
    links.mkdir(parents=True)
    (links / "0000:16:00.0").symlink_to("/sys/devices/pci0000:15/0000:15:01.0/0000:16:00.0")
    (links / "0000:15:01.0").symlink_to("/sys/devices/pci0000:15/0000:15:01.0")
    (gpu,) = SysfsReader(root).nvidia_gpus()
    assert gpu.pci_path == ("0000:15:01.0",)
