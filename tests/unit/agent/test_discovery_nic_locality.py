"""Issue 15 #1: GPU<->NIC locality as NCCL's GPUDirect RDMA rule has it. On DGX A100/H100 the
Broadcom PCIe switches (1000:c010, 1000:c030) show up as two bridge levels, and a GPU and its own
NIC meet one level up: ``nvidia-smi topo -m`` prints PXB, not PIX, between them
(NVIDIA/nccl#1505's DGX A100 dump: GPU 0000:07:00.0 below switch 0000:03:00.0, mlx5_0 at
0000:0c:00.0 below switch 0000:0a:00.0, both below 0000:01:00.0). Such a NIC is local."""

from __future__ import annotations

from pathlib import Path

from gputopo.agent.discovery import discover
from gputopo.agent.labels.topology import TopologyLabeler
from gputopo.agent.render import gpu_nic_code, render_text
from gputopo.agent.sysfs import pcie_relation
from gputopo.agent.topology import NodeTopology
from gputopo.core.contract import DEFAULT_CONTRACT
from gputopo.mocks.fake_pynvml import make_fake_pynvml
from gputopo.mocks.profile import load_profile
from gputopo.mocks.sysfs import build_sysfs

TWO_LEVEL = """\
# One quarter of a DGX A100's PCIe tree (NVIDIA/nccl#1505): two GPUs and two ConnectX-6 below
# one Broadcom PEX switch, which shows up as a top level and one second level per endpoint pair.
node: {hostname: two-level}
numa:
  - {id: 0, cpus: "0-15"}
  - {id: 1, cpus: "16-31"}
pci:
  switches:
    - {name: top0, upstream: "0000:01:00.0", parent: "0000:00:01.1", device_id: 0xc010}
    - {name: gpu0sw, upstream: "0000:03:00.0", parent: top0, device_id: 0xc010}
    - {name: nic0sw, upstream: "0000:0a:00.0", parent: top0, device_id: 0xc010}
    - {name: gpu1sw, upstream: "0000:0d:00.0", parent: top0, device_id: 0xc010}
gpu_defaults:
  name: NVIDIA A100-SXM4-80GB
  memory_mib: 81920
  compute_capability: "8.0"
  architecture: ampere
  pci_device_id: 0x20b2
gpus:
  - {bus_id: "0000:07:00.0", numa_node: 0, parent: gpu0sw}
  - {bus_id: "0000:0f:00.0", numa_node: 0, parent: gpu1sw}
  - {bus_id: "0000:47:00.0", numa_node: 1}
nics:
  - {name: mlx5_0, bus_id: "0000:0c:00.0", parent: nic0sw, numa_node: 0, netdevs: [ibp12s0]}
  - {name: mlx5_9, bus_id: "0000:11:00.0", parent: gpu1sw, numa_node: 0, netdevs: [ibp17s0]}
"""


def _topology(tmp_path: Path) -> NodeTopology:
    path = tmp_path / "two-level.yaml"
    path.write_text(TWO_LEVEL)
    profile = load_profile(str(path))
    return discover(make_fake_pynvml(profile), build_sysfs(profile, tmp_path / "sys"), "n")


def test_gpu_and_its_nic_below_a_two_level_broadcom_switch_are_pxb_and_local(
    tmp_path: Path,
) -> None:
    topology = _topology(tmp_path)
    mlx5_0, mlx5_9 = topology.rdma_nics
    gpu0, gpu1, far = topology.gpus
    assert gpu0.pcie_switch != mlx5_0.pcie_switch  # the old rule: no local GPU at all
    assert gpu_nic_code(gpu0, mlx5_0) == "PXB"
    assert gpu_nic_code(gpu1, mlx5_9) == "PIX"
    assert gpu_nic_code(gpu0, mlx5_9) == "PXB"
    assert gpu_nic_code(far, mlx5_0) == "SYS"
    assert mlx5_0.local_gpus == (0, 1)
    assert mlx5_9.local_gpus == (0, 1)
    assert TopologyLabeler(DEFAULT_CONTRACT).labels(topology)["gputopo.io/gpu.rdma"] == "true"


def test_discover_matrix_prints_pxb_as_nvidia_smi_does(tmp_path: Path) -> None:
    text = render_text(_topology(tmp_path))
    rows = [line.split() for line in text.splitlines()]
    gpu0 = next(row for row in rows if row[:2] == ["GPU0", "X"])
    assert gpu0[4:6] == ["PXB", "PXB"]  # NIC0 (mlx5_0), NIC1 (mlx5_9)


def test_pcie_relation_names_the_lowest_common_ancestor() -> None:
    root, top, down_a, down_b = "0000:00:01.1", "0000:01:00.0", "0000:02:00.0", "0000:02:01.0"
    gpu = (root, top, down_a, "0000:03:00.0", "0000:04:00.0")
    nic = (root, top, down_b, "0000:0a:00.0", "0000:0b:00.0")
    assert pcie_relation(gpu, nic) == "PXB"
    assert pcie_relation(gpu, (*gpu[:-1], "0000:04:01.0")) == "PIX"
    assert pcie_relation((root,), ("0000:00:03.1",)) == "PHB"  # same root bus
    assert pcie_relation((root,), ("0000:40:01.1",)) is None
    assert pcie_relation((), nic) is None
