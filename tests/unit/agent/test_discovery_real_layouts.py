"""The built-in profiles of named machines give what those machines show (issue 15): each test
compares discovery of the profile with a public capture of the real machine."""

from __future__ import annotations

from pathlib import Path

from gputopo.agent.discovery import discover
from gputopo.agent.render import gpu_nic_code
from gputopo.agent.topology import NodeTopology
from gputopo.mocks.fake_pynvml import make_fake_pynvml
from gputopo.mocks.profile import load_profile
from gputopo.mocks.sysfs import build_sysfs

# `nvidia-smi topo -m` of a DGX H100 (driver 580.126.20), GPU rows, NIC columns NIC0..NIC11
# (mlx5_0..mlx5_11).
DGX_H100_GPU_NIC = """\
PXB NODE NODE NODE NODE NODE SYS SYS SYS SYS SYS SYS
NODE NODE NODE PXB NODE NODE SYS SYS SYS SYS SYS SYS
NODE NODE NODE NODE PXB NODE SYS SYS SYS SYS SYS SYS
NODE NODE NODE NODE NODE PXB SYS SYS SYS SYS SYS SYS
SYS SYS SYS SYS SYS SYS PXB NODE NODE NODE NODE NODE
SYS SYS SYS SYS SYS SYS NODE NODE NODE PXB NODE NODE
SYS SYS SYS SYS SYS SYS NODE NODE NODE NODE PXB NODE
SYS SYS SYS SYS SYS SYS NODE NODE NODE NODE NODE PXB
"""


def _discover(name: str, tmp_path: Path) -> NodeTopology:
    profile = load_profile(name)
    return discover(make_fake_pynvml(profile), build_sysfs(profile, tmp_path / "sys"), name)


def test_dgx_h100_gpu_nic_matrix_is_the_real_machines(tmp_path: Path) -> None:
    topology = _discover("dgx-h100", tmp_path)
    assert [nic.name for nic in topology.rdma_nics] == [f"mlx5_{i}" for i in range(12)]
    matrix = [
        " ".join(gpu_nic_code(gpu, nic) for nic in topology.rdma_nics) for gpu in topology.gpus
    ]
    assert matrix == DGX_H100_GPU_NIC.splitlines()
    assert [gpu.pci_bus_id[5:7] for gpu in topology.gpus] == [
        "1b", "43", "52", "61", "9d", "c3", "d1", "df"
    ]  # fmt: skip
    compute = {nic.name: nic.local_gpus for nic in topology.rdma_nics if nic.local_gpus}
    assert compute == {  # DGX H100 user guide, "Network Modules": the GPU each port serves
        "mlx5_0": (0,), "mlx5_3": (1,), "mlx5_4": (2,), "mlx5_5": (3,),
        "mlx5_6": (4,), "mlx5_9": (5,), "mlx5_10": (6,), "mlx5_11": (7,),
    }  # fmt: skip
    assert {nic.name: nic.netdevs for nic in topology.rdma_nics}["mlx5_0"] == ("ibp24s0",)


def test_dgx_h100_nvswitches_are_pci_devices_of_the_host(tmp_path: Path) -> None:
    """Fabric Manager user guide: on HGX H100 baseboards the four NVSwitches are PCIe devices of
    the host (10de:22a3 at 07..0a:00.0), and every GPU's NVLinks reach them."""
    root = build_sysfs(load_profile("dgx-h100"), tmp_path / "sys")
    for bus in ("07", "08", "09", "0a"):
        assert (root / f"bus/pci/devices/0000:{bus}:00.0/device").read_text() == "0x22a3\n"
    topology = discover(make_fake_pynvml(load_profile("dgx-h100")), root, "dgx")
    assert {link.remote_pci_bus_id for link in topology.gpus[0].nvlinks} == {
        f"0000:{bus}:00.0" for bus in ("07", "08", "09", "0a")
    }


def test_dgx_a100_mlx5_0_at_0c_is_pxb_to_both_gpus_of_its_quarter(tmp_path: Path) -> None:
    """NVIDIA/nccl#1505: on a DGX A100 mlx5_0 is 0c:00.0, alone below the Broadcom bridge
    0a:00.0, which shares a top switch with GPU 0 (07:00.0) and GPU 1's bridge 0d:00.0."""
    topology = _discover("dgx-a100-mig", tmp_path)
    nics = {nic.name: nic for nic in topology.rdma_nics}
    mlx5_0 = nics["mlx5_0"]
    assert (mlx5_0.pci_bus_id, mlx5_0.pcie_switch, mlx5_0.netdevs) == (
        "0000:0c:00.0",
        "0000:0a:00.0",
        ("ibp12s0",),
    )
    assert topology.gpu(1).pcie_switch == "0000:0d:00.0"
    assert [gpu_nic_code(topology.gpu(i), mlx5_0) for i in range(8)] == ["PXB"] * 2 + ["SYS"] * 6
    assert {name: nic.local_gpus for name, nic in nics.items()} == {
        "mlx5_0": (0, 1), "mlx5_1": (0, 1), "mlx5_2": (2, 3), "mlx5_3": (2, 3),
        "mlx5_6": (4, 5), "mlx5_7": (4, 5), "mlx5_8": (6, 7), "mlx5_9": (6, 7),
    }  # fmt: skip


def test_hgx_h200_mig_names_are_the_drivers_3g_71gb_not_70gb(tmp_path: Path) -> None:
    """NVIDIA/mig-parted#120's `nvidia-smi mig -lgip` on an H200: 3g.71gb and 4g.71gb hold
    69.50 GiB; the names are the driver's, as the device plugin advertises them."""
    topology = _discover("hgx-h200-mig", tmp_path)
    profiles = [[gi.profile for gi in gpu.mig.instances] for gpu in topology.gpus[:4]]
    assert profiles == [
        ["3g.71gb", "3g.71gb"],
        ["4g.71gb", "2g.35gb", "1g.18gb"],
        ["1g.18gb"] * 7,
        ["1g.18gb+me", "1g.35gb", "3g.71gb"],
    ]
    assert [ci.profile for ci in topology.gpu(3).mig.instances[2].compute_instances] == [
        "1c.3g.71gb",
        "2c.3g.71gb",
    ]
    assert topology.gpu(0).mig.instances[0].memory_mib == 71168
    assert all(gpu.nvml_errors == () for gpu in topology.gpus)


def test_single_socket_machine_whose_sysfs_says_minus_one_keeps_every_gpu_on_its_node(
    tmp_path: Path,
) -> None:
    root = build_sysfs(load_profile("l4-single-socket"), tmp_path / "sys")
    for bus in ("01", "41"):
        assert (root / f"bus/pci/devices/0000:{bus}:00.0/numa_node").read_text() == "-1\n"
    topology = discover(make_fake_pynvml(load_profile("l4-single-socket")), root, "l4")
    assert [gpu.numa_node for gpu in topology.gpus] == [0, 0]
    assert topology.numa_nodes[0].gpus == (0, 1)


def test_a100_pcie_pair_with_a_bridge_not_fitted_is_nv8_and_healthy(tmp_path: Path) -> None:
    topology = _discover("a100-pcie-pair-missing-bridge", tmp_path)
    for gpu in topology.gpus:
        assert [link.active for link in gpu.nvlinks] == [True] * 8 + [False] * 4
        assert gpu.health_signals.nvlinks_down == 0
        assert gpu.health.value == "ok"
    assert topology.nvlink_domains[0].gpus == (0, 1)
