"""Property tests: whatever NVML answers or refuses, discovery yields a consistent model."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pynvml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gputopo.agent.discovery import discover
from gputopo.agent.topology import NodeTopology
from gputopo.mocks.fake_pynvml import make_fake_pynvml
from gputopo.mocks.spec import MachineProfile
from gputopo.mocks.strategies import profiles as random_profiles
from gputopo.mocks.sysfs import build_sysfs
from tests.unit.agent.agent_fixtures import PciFunction, TinyGpu, build_tree, tiny_nvml

DEVICE_QUERIES = [
    "nvmlDeviceGetPciInfo",
    "nvmlDeviceGetUUID",
    "nvmlDeviceGetName",
    "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetCudaComputeCapability",
    "nvmlDeviceGetNumaNodeId",
    "nvmlDeviceGetCpuAffinity",
    "nvmlDeviceGetNvLinkState",
    "nvmlDeviceGetNvLinkVersion",
    "nvmlDeviceGetNvLinkRemoteDeviceType",
    "nvmlDeviceGetNvLinkRemotePciInfo",
    "nvmlDeviceGetTopologyCommonAncestor",
    "nvmlDeviceGetTotalEccErrors",
    "nvmlDeviceGetCurrentClocksEventReasons",
    "nvmlDeviceGetTemperature",
    "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetEnforcedPowerLimit",
    "nvmlDeviceGetRemappedRows",
]
ERRORS = [
    pynvml.NVML_ERROR_NOT_SUPPORTED,
    pynvml.NVML_ERROR_NO_PERMISSION,
    pynvml.NVML_ERROR_GPU_IS_LOST,
    pynvml.NVML_ERROR_UNKNOWN,
    pynvml.NVML_ERROR_TIMEOUT,
    pynvml.NVML_ERROR_INVALID_ARGUMENT,
]
SWITCH = "00000000:A5:00.0"


@st.composite
def machines(draw: st.DrawFn) -> tuple[list[TinyGpu], list[PciFunction]]:
    count = draw(st.integers(min_value=0, max_value=6))
    buses = [f"{0x18 + 0x11 * i:02x}" for i in range(count)]
    gpus = []
    for bus in buses:
        links: dict[int, tuple[int, int, int | None, str]] = {}
        for link in range(draw(st.integers(min_value=0, max_value=4))):
            target = draw(st.sampled_from([SWITCH, *(f"00000000:{b.upper()}:00.0" for b in buses)]))
            remote_type = draw(st.sampled_from([0, 2, None]))
            links[link] = (draw(st.integers(0, 1)), draw(st.integers(1, 6)), remote_type, target)
        fail = draw(st.dictionaries(st.sampled_from(DEVICE_QUERIES), st.sampled_from(ERRORS)))
        gpus.append(
            TinyGpu(
                bus_id=f"00000000:{bus.upper()}:00.0",
                numa=draw(st.integers(0, 2)),
                links=links,
                fail=fail,
                lost=draw(st.booleans()),
            )
        )
    functions = [
        PciFunction(f"0000:{bus}:00.0", numa_node=draw(st.integers(-1, 1))) for bus in buses
    ]
    extra = draw(st.integers(0, 1))
    functions += [PciFunction(f"0000:f{i}:00.0", driver=None) for i in range(extra)]
    return gpus, functions


def check_consistent(topology: NodeTopology) -> None:
    indices = {gpu.index for gpu in topology.gpus}
    seen: set[int] = set()
    for domain in topology.nvlink_domains:
        assert len(domain.gpus) >= 2
        assert not seen & set(domain.gpus), "a GPU is in two domains"
        seen |= set(domain.gpus)
        assert set(domain.gpus) <= indices
        for index in domain.gpus:
            assert topology.gpu(index).nvlink_domain == domain.id
    for gpu in topology.gpus:
        if gpu.nvlink_domain is None:
            assert gpu.index not in seen
        for p2p in gpu.p2p:
            peer = topology.gpu(p2p.gpu)
            assert any(back.gpu == gpu.index and back.level == p2p.level for back in peer.p2p)
    numa_ids = {node.id for node in topology.numa_nodes}
    for gpu in topology.gpus:
        assert gpu.numa_node is None or gpu.numa_node in numa_ids
    for nic in topology.rdma_nics:
        assert nic.numa_node is None or nic.numa_node in numa_ids
        assert set(nic.local_gpus) <= indices
    for node in topology.numa_nodes:
        assert node.distances == () or len(node.distances) == len(topology.numa_nodes)
    assert NodeTopology.from_json(topology.to_json()) == topology


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(machines())
def test_injected_nvml_failures_never_crash_and_the_model_stays_consistent(
    machine: tuple[list[TinyGpu], list[PciFunction]],
) -> None:
    gpus, functions = machine
    with tempfile.TemporaryDirectory() as directory:
        root = build_tree(
            Path(directory) / "sys", functions, numa={0: ("0-3", "10 21", 1), 1: ("", "21 10", 1)}
        )
        topology = discover(tiny_nvml(gpus), root, hostname="prop")
    check_consistent(topology)
    assert len(topology.gpus) == len(gpus)
    lost = {i for i, gpu in enumerate(gpus) if gpu.lost}
    for index in lost:
        assert topology.gpu(index).health.value == "failed"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_profiles(max_gpus=8, faults=True))
def test_random_valid_profiles_always_yield_a_consistent_model(profile: MachineProfile) -> None:
    with tempfile.TemporaryDirectory() as directory:
        root = build_sysfs(profile, Path(directory) / "sys")
        topology = discover(make_fake_pynvml(profile), root, hostname=profile.node.hostname)
    check_consistent(topology)
    if topology.nvml.available:
        assert len(topology.gpus) + len(topology.pci_only_gpus) >= len(profile.nvml_gpus())
