"""Load sampling that needs no GPU: NUMA memory from sysfs, CPU busy ratios from CPU times."""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path

from gputopo.agent.topology import NodeInfo, NodeTopology, NumaNode, NvmlStatus
from gputopo.agent.usage import CpuUtilization, LoadSampler, numa_cpu_ratios, read_numa_memory

CpuTimes = namedtuple("CpuTimes", "user nice system idle iowait irq softirq steal guest guest_nice")


MEMINFO = """Node {n} MemTotal:       {total} kB
Node {n} MemFree:        {free} kB
Node {n} MemUsed:        {used} kB
Node {n} Active:          1234 kB
Node {n} HugePages_Total:     0
"""


def _numa_tree(root: Path, nodes: dict[int, tuple[int, int, int]]) -> Path:
    for node, (total, free, used) in nodes.items():
        directory = root / "devices" / "system" / "node" / f"node{node}"
        directory.mkdir(parents=True)
        (directory / "meminfo").write_text(
            MEMINFO.format(n=node, total=total, free=free, used=used)
        )
    (root / "devices" / "system" / "node" / "possible").write_text("0-1\n")
    return root


def test_numa_memory_used_and_total_from_meminfo(tmp_path: Path) -> None:
    root = _numa_tree(tmp_path, {0: (1000, 400, 600), 1: (2000, 2000, 0), 10: (8, 4, 4)})
    memory = read_numa_memory(root)
    assert [(m.numa_node, m.used_bytes, m.total_bytes) for m in memory] == [
        (0, 600 * 1024, 1000 * 1024),
        (1, 0, 2000 * 1024),
        (10, 4 * 1024, 8 * 1024),
    ]


def test_numa_memory_without_memused_falls_back_to_total_minus_free(tmp_path: Path) -> None:
    directory = tmp_path / "devices" / "system" / "node" / "node0"
    directory.mkdir(parents=True)
    (directory / "meminfo").write_text("Node 0 MemTotal: 100 kB\nNode 0 MemFree: 30 kB\n")
    (memory,) = read_numa_memory(tmp_path)
    assert memory.used_bytes == 70 * 1024


def test_missing_sysfs_gives_no_numa_memory(tmp_path: Path) -> None:
    assert read_numa_memory(tmp_path / "absent") == ()


def test_cpu_busy_ratio_between_samples() -> None:
    samples = iter(
        [
            [CpuTimes(10, 0, 10, 80, 0, 0, 0, 0, 0, 0), CpuTimes(0, 0, 0, 100, 0, 0, 0, 0, 0, 0)],
            [CpuTimes(40, 0, 20, 140, 0, 0, 0, 0, 5, 0), CpuTimes(0, 0, 0, 150, 50, 0, 0, 0, 0, 0)],
        ]
    )
    cpu = CpuUtilization(lambda: next(samples))
    assert cpu.sample() is None  # nothing to compare with yet
    ratios = cpu.sample()
    assert ratios == {0: 0.4, 1: 0.0}  # iowait counts as idle; guest is inside user


def test_numa_cpu_ratio_averages_the_nodes_cpus() -> None:
    topology = NodeTopology(
        node=NodeInfo(hostname="n"),
        nvml=NvmlStatus(available=False),
        numa_nodes=(NumaNode(id=0, cpus=(0, 1)), NumaNode(id=1, cpus=(2, 3)), NumaNode(id=2)),
    )
    assert numa_cpu_ratios({0: 0.2, 1: 0.4, 2: 1.0, 3: 0.0}, topology) == {
        0: 0.30000000000000004,
        1: 0.5,
    }


def test_sampler_without_nvml_still_samples_the_node(tmp_path: Path) -> None:
    root = _numa_tree(tmp_path, {0: (1000, 400, 600)})
    times = iter(
        [[CpuTimes(0, 0, 0, 10, 0, 0, 0, 0, 0, 0)], [CpuTimes(5, 0, 0, 15, 0, 0, 0, 0, 0, 0)]]
    )
    sampler = LoadSampler(root, cpu=CpuUtilization(lambda: next(times)), clock=lambda: 42.0)
    sampler.sample(None, None)
    sample = sampler.sample(None, None)
    assert sample.timestamp == 42.0
    assert sample.gpus == {}
    assert sample.cpu_utilization_ratio == 0.5
    assert sample.numa_memory[0].used_bytes == 600 * 1024
