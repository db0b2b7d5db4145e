"""The fake sysfs tree has the kernel's layout: nesting, symlinks, attribute formats."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gputopo.mocks.profile import load_profile
from gputopo.mocks.sysfs import build_sysfs, cpumask


@pytest.fixture(scope="module")
def hgx_h100(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_sysfs(load_profile("supermicro-hgx-h100"), tmp_path_factory.mktemp("sys"))


def test_gpu_nests_under_root_port_and_switch_ports(hgx_h100: Path) -> None:
    gpu = hgx_h100 / "devices/pci0000:15/0000:15:01.0/0000:16:00.0/0000:17:00.0/0000:18:00.0"
    assert (gpu / "vendor").read_text() == "0x10de\n"
    assert (gpu / "device").read_text() == "0x2330\n"
    assert (gpu / "class").read_text() == "0x030200\n"
    assert (gpu / "numa_node").read_text() == "0\n"
    assert (gpu / "local_cpulist").read_text() == "0-55,112-167\n"
    assert (gpu / "current_link_speed").read_text() == "32.0 GT/s PCIe\n"
    assert (gpu / "max_link_width").read_text() == "16\n"
    assert os.readlink(gpu / "driver") == "../../../../../../bus/pci/drivers/nvidia"
    assert (gpu / "driver").resolve() == (hgx_h100 / "bus/pci/drivers/nvidia").resolve()
    for bridge in ("0000:15:01.0", "0000:16:00.0", "0000:17:00.0"):
        assert (hgx_h100 / "bus/pci/devices" / bridge / "class").read_text() == "0x060400\n"


def test_bus_symlinks_are_relative_into_devices(hgx_h100: Path) -> None:
    link = hgx_h100 / "bus/pci/devices/0000:db:00.0"
    assert (
        os.readlink(link)
        == "../../../devices/pci0000:d8/0000:d8:01.0/0000:d9:00.0/0000:da:00.0/0000:db:00.0"
    )
    assert (link / "numa_node").read_text() == "1\n"


def test_nic_shares_the_gpu_switch_and_has_infiniband_and_net(hgx_h100: Path) -> None:
    nic = (hgx_h100 / "bus/pci/devices/0000:19:00.0").resolve()
    assert nic.parent.parent == (hgx_h100 / "bus/pci/devices/0000:18:00.0").resolve().parent.parent
    assert (nic / "vendor").read_text() == "0x15b3\n"
    assert (nic / "class").read_text() == "0x020700\n"
    assert (nic / "driver").resolve().name == "mlx5_core"
    ib = hgx_h100 / "class/infiniband/mlx5_0"
    assert os.readlink(ib / "device") == "../../../0000:19:00.0"
    assert (ib / "device").resolve() == nic
    assert (nic / "net/ibp25s0").is_dir()
    assert (hgx_h100 / "class/net/ibp25s0/device").resolve() == nic


def test_numa_nodes_and_meminfo(hgx_h100: Path) -> None:
    node = hgx_h100 / "devices/system/node"
    assert (node / "online").read_text() == "0-1\n"
    assert (node / "possible").read_text() == "0-1\n"
    assert (node / "node1/cpulist").read_text() == "56-111,168-223\n"
    assert (node / "node0/distance").read_text() == "10 21\n"
    first = (node / "node1/meminfo").read_text().splitlines()[0]
    assert first.split() == ["Node", "1", "MemTotal:", str(1032192 * 1024), "kB"]


def test_dmi_identity(tmp_path: Path) -> None:
    dgx_h100 = build_sysfs(load_profile("dgx-h100"), tmp_path)
    assert (dgx_h100 / "class/dmi/id/product_name").read_text() == "DGXH100\n"
    assert (dgx_h100 / "class/dmi/id/sys_vendor").read_text() == "NVIDIA\n"


def test_nvswitches_not_on_host_pci_are_absent(hgx_h100: Path) -> None:
    assert not (hgx_h100 / "bus/pci/devices/0000:05:00.0").exists()


def test_dgx_a100_nested_switches_and_pci_nvswitches(tmp_path: Path) -> None:
    root = build_sysfs(load_profile("dgx-a100-mig"), tmp_path)
    gpu = root / "bus/pci/devices/0000:0f:00.0"
    assert os.readlink(gpu).endswith(
        "pci0000:00/0000:00:01.1/0000:01:00.0/0000:02:02.0/0000:0d:00.0/0000:0e:00.0/0000:0f:00.0"
    )
    switch = root / "bus/pci/devices/0000:c4:00.0"
    assert (switch / "class").read_text() == "0x068000\n"
    assert (switch / "driver").resolve().name == "nvidia-nvswitch"


def test_lost_and_hidden_gpus_stay_on_the_pci_bus(tmp_path: Path) -> None:
    root = build_sysfs(load_profile("dgx-h100-degraded"), tmp_path)
    assert (root / "bus/pci/devices/0000:d1:00.0/vendor").read_text() == "0x10de\n"


def test_consumer_card_is_a_vga_controller(tmp_path: Path) -> None:
    root = build_sysfs(load_profile("rtx4090-workstation"), tmp_path)
    assert (root / "bus/pci/devices/0000:01:00.0/class").read_text() == "0x030000\n"
    assert (
        root / "bus/pci/devices/0000:01:00.0/current_link_speed"
    ).read_text() == "16.0 GT/s PCIe\n"


def test_gb200_cpu_less_numa_nodes(tmp_path: Path) -> None:
    root = build_sysfs(load_profile("gb200-nvl4"), tmp_path)
    node = root / "devices/system/node"
    assert (node / "online").read_text() == "0-5\n"
    assert (node / "node3/cpulist").read_text() == "\n"
    assert (node / "has_cpu").read_text() == "0-1\n"


def test_cpu_only_has_no_nvidia_device(tmp_path: Path) -> None:
    root = build_sysfs(load_profile("cpu-only"), tmp_path)
    assert not (root / "bus/pci/devices").exists() or not any((root / "bus/pci/devices").iterdir())
    assert (root / "devices/system/node/node1/cpulist").read_text() == "32-63,96-127\n"


def test_rebuilding_into_the_same_root_is_idempotent(tmp_path: Path) -> None:
    profile = load_profile("l4-pcie")
    build_sysfs(profile, tmp_path)
    build_sysfs(profile, tmp_path)
    assert len(list((tmp_path / "bus/pci/devices").iterdir())) == 8  # 4 GPUs + 4 root ports


def test_cpumask_format() -> None:
    assert cpumask((0, 1, 2, 3), 8) == "0000000f"
    assert cpumask((32, 64), 96) == "00000001,00000001,00000000"
