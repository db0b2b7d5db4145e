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
