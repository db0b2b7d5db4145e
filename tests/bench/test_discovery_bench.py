"""Discovery cost, in process: one whole ``Discoverer.discover()`` on a warm ``Discoverer``.

Three variants per machine:

- ``fake``: the built-in profile's fake ``pynvml`` and fake sysfs tree, as the demo runs it. The
  fake is pure Python and computes some answers (P2P levels) from the profile on every call, so
  this includes the fake's own cost.
- ``replayed``: the same, with every NVML answer recorded once and replayed from memory, which
  leaves the agent's own work (plus a dict lookup per call) - the part a real NVML, whose calls
  are microseconds of C, would not hide.
- ``hand_built``: a DGX H100 laid out by hand with the unit tests' tiny NVML stand-in.

Run with ``make bench`` (or ``pytest tests/bench/test_discovery_bench.py --benchmark-only``);
the numbers are recorded in docs/performance.md under "Discovery". The target is a DGX H100
(8 GPUs x 18 NVLinks, 2 NUMA nodes) under 20 ms.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gputopo.agent.discovery import Discoverer
from gputopo.mocks.fake_pynvml import make_fake_pynvml
from gputopo.mocks.profile import builtin_profile_names, load_profile
from gputopo.mocks.sysfs import build_sysfs
from tests.unit.agent.agent_fixtures import PciFunction, TinyGpu, build_tree, tiny_nvml

SWITCH = "00000000:A5:00.0"
BUSES = ["18", "2a", "3a", "5d", "9a", "ab", "ba", "db"]


def hand_built_dgx_h100(root: Path) -> tuple[Any, Path]:
    """A DGX H100 laid out by hand: 8 GPUs behind PCIe switches, 8 NICs, 2 NUMA nodes."""
    gpus = [
        TinyGpu(
            bus_id=f"00000000:{bus.upper()}:00.0",
            numa=i // 4,
            links={n: (1, 6, 2, SWITCH) for n in range(18)},
        )
        for i, bus in enumerate(BUSES)
    ]
    functions = []
    infiniband = {}
    for i, bus in enumerate(BUSES):
        prefix = f"{int(bus, 16) - 3:02x}"
        switch = (f"0000:{prefix}:01.0", f"0000:{int(bus, 16) - 2:02x}:00.0")
        cpus = "0-55,112-167" if i < 4 else "56-111,168-223"
        functions.append(
            PciFunction(
                f"0000:{bus}:00.0",
                parents=(*switch, f"0000:{int(bus, 16) - 1:02x}:00.0"),
                numa_node=i // 4,
                local_cpulist=cpus,
            )
        )
        nic = f"0000:{bus}:00.1"
        functions.append(
            PciFunction(
                nic,
                parents=(*switch, f"0000:{int(bus, 16) - 1:02x}:01.0"),
                vendor="0x15b3",
                pci_class="0x020700",
                driver="mlx5_core",
                numa_node=i // 4,
                local_cpulist=cpus,
            )
        )
        infiniband[f"mlx5_{i}"] = (nic, (f"ibp{int(bus, 16)}s0",))
    tree = build_tree(
        root,
        functions,
        numa={0: ("0-55,112-167", "10 21", 1 << 30), 1: ("56-111,168-223", "21 10", 1 << 30)},
        infiniband=infiniband,
        dmi=("DGXH100", "NVIDIA"),
    )
    return tiny_nvml(gpus), tree


@pytest.fixture
def hand_built_discoverer(tmp_path: Path) -> Iterator[Discoverer]:
    module, root = hand_built_dgx_h100(tmp_path / "sys")
    with Discoverer(module, root, "bench") as discoverer:
        yield discoverer


@pytest.mark.bench
def test_discovery_hand_built_dgx_h100(benchmark: Any, hand_built_discoverer: Discoverer) -> None:
    topology = benchmark(hand_built_discoverer.discover)
    assert len(topology.gpus) == 8
    assert len(topology.nvlink_domains) == 1
    assert all(len(nic.local_gpus) == 1 for nic in topology.rdma_nics)


class ReplayedNvml:
    """Wraps an NVML module: each (function, arguments) is asked once, then answered from memory
    (errors included). Handles are keyed by identity, which is stable for one session."""

    def __init__(self, module: Any) -> None:
        self._module = module
        self._answers: dict[tuple[Any, ...], tuple[bool, Any]] = {}
        self.NVMLError = module.NVMLError

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._module, name)
        if not callable(value) or not name.startswith("nvml") or name.startswith("nvmlEventSet"):
            return value

        def replay(*args: Any) -> Any:
            key = (name, *(_key(arg) for arg in args))
            if key not in self._answers:
                try:
                    self._answers[key] = (True, value(*args))
                except self._module.NVMLError as error:
                    self._answers[key] = (False, error)
            ok, answer = self._answers[key]
            if not ok:
                raise answer
            return answer

        setattr(self, name, replay)  # later lookups skip __getattr__
        return replay


def _key(argument: Any) -> Any:
    return argument if isinstance(argument, int | str | bytes) else id(argument)


@pytest.fixture(params=builtin_profile_names())
def profile_machine(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Any, Path, str]:
    profile = load_profile(request.param)
    root = build_sysfs(profile, tmp_path / "sys")
    return make_fake_pynvml(profile), root, request.param


@pytest.mark.bench
@pytest.mark.parametrize("nvml", ["fake", "replayed"])
def test_discovery_builtin_profile(
    benchmark: Any, profile_machine: tuple[Any, Path, str], nvml: str
) -> None:
    module, root, name = profile_machine
    if nvml == "replayed":
        module = ReplayedNvml(module)
    benchmark.group = f"discovery {nvml}"
    with Discoverer(module, root, name) as discoverer:
        discoverer.discover()  # warm: fills the replay cache, first file-system reads
        topology = benchmark(discoverer.discover)
    assert topology.node.hostname == name
