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


class _OneCallNvml:
    """Just the pynvml calls the load sampler makes, with pynvml's own structs and errors.

    GPU 0: busy, 2 NVLinks (link 1 down, with errors); GPU 1: a consumer card (NVLink and
    utilisation NOT_SUPPORTED); GPU 2: lost mid-sample; GPU 3: MIG with one device.
    """

    import pynvml as _pynvml

    NVMLError = _pynvml.NVMLError
    NVML_NVLINK_MAX_LINKS = 18

    def __init__(self) -> None:
        self.calls: list[str] = []

    def _raise(self, code: int) -> None:
        raise self._pynvml.NVMLError(code)

    def nvmlDeviceGetCount(self) -> int:
        return 4

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"gpu{index}"

    def nvmlDeviceGetUUID(self, handle: str) -> str:
        if handle == "mig3":
            return "MIG-0000"
        return f"GPU-{handle}"

    def nvmlDeviceGetUtilizationRates(self, handle: str) -> object:
        if handle == "gpu1":
            self._raise(self._pynvml.NVML_ERROR_NOT_SUPPORTED)
        if handle == "gpu2":
            self._raise(self._pynvml.NVML_ERROR_GPU_IS_LOST)
        rates = self._pynvml.c_nvmlUtilization_t()
        rates.gpu, rates.memory = 87, 40
        return rates

    def nvmlDeviceGetMemoryInfo(self, handle: str) -> object:
        self.calls.append(f"memory:{handle}")
        memory = self._pynvml.c_nvmlMemory_t()
        memory.total, memory.used = (10 * 2**30, 2**30) if handle == "mig3" else (80 * 2**30, 2**33)
        memory.free = memory.total - memory.used
        return memory

    def nvmlDeviceGetNvLinkState(self, handle: str, link: int) -> int:
        if handle != "gpu0" or link >= 2:
            self._raise(self._pynvml.NVML_ERROR_NOT_SUPPORTED)
        return 0 if link == 1 else 1

    def nvmlDeviceGetNvLinkErrorCounter(self, handle: str, link: int, counter: int) -> int:
        if counter == 3:
            self._raise(self._pynvml.NVML_ERROR_NOT_SUPPORTED)
        return 10 * link + counter

    def nvmlDeviceGetMigMode(self, handle: str) -> list[int]:
        if handle != "gpu3":
            self._raise(self._pynvml.NVML_ERROR_NOT_SUPPORTED)
        return [1, 1]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: str) -> int:
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: str, index: int) -> str:
        if index != 0:
            self._raise(self._pynvml.NVML_ERROR_NOT_FOUND)
        return "mig3"


def test_gpu_utilisation_memory_and_nvlink_sample() -> None:
    from gputopo.agent.nvml import sample_gpus

    gpus = sample_gpus(_OneCallNvml())
    busy = gpus[0]
    assert busy.uuid == "GPU-gpu0"
    assert (busy.utilization_ratio, busy.memory_utilization_ratio) == (0.87, 0.4)
    assert (busy.memory_used_bytes, busy.memory_total_bytes) == (2**33, 80 * 2**30)
    assert [(link.link, link.active) for link in busy.nvlinks] == [(0, True), (1, False)]
    assert busy.nvlinks[1].errors == {"replay": 10, "recovery": 11, "crc_flit": 12}
    assert busy.mig_devices == ()


def test_unsupported_queries_are_unknown_not_zero() -> None:
    from gputopo.agent.nvml import sample_gpus

    consumer = sample_gpus(_OneCallNvml())[1]
    assert consumer.utilization_ratio is None
    assert consumer.memory_used_bytes == 2**33  # the rest is still sampled
    assert consumer.nvlinks == ()
    assert not consumer.lost


def test_gpu_lost_mid_sample_stops_querying_it() -> None:
    from gputopo.agent.nvml import sample_gpus

    nvml = _OneCallNvml()
    lost = sample_gpus(nvml)[2]
    assert lost.lost
    assert lost.memory_used_bytes is None
    assert "memory:gpu2" not in nvml.calls


def test_mig_device_memory() -> None:
    from gputopo.agent.nvml import MigDeviceLoad, sample_gpus

    assert sample_gpus(_OneCallNvml())[3].mig_devices == (
        MigDeviceLoad("MIG-0000", 2**30, 10 * 2**30),
    )


def test_a_health_tick_reads_each_nvlink_state_once_dgx_h100(tmp_path: Path) -> None:
    """The health poll's NVLink states feed the load sample; the link count discovery learnt
    means no call past the last link (8 GPUs x 18 links on a DGX H100)."""
    from gputopo.agent.discovery import Discoverer
    from gputopo.agent.loop import Agent, RunLoopConfig
    from gputopo.mocks.fake_pynvml import make_fake_pynvml
    from gputopo.mocks.profile import load_profile
    from gputopo.mocks.sysfs import build_sysfs

    machine = load_profile("dgx-h100")
    nvml = make_fake_pynvml(machine)
    build_sysfs(machine, tmp_path)
    with Discoverer(nvml, tmp_path, "node") as discoverer:
        agent = Agent(discoverer, publisher=None, config=RunLoopConfig(udev=False))
        agent.run_cycle()
        nvml.control.set_nvlink_active(3, 5, False)
        before = nvml.control.calls["nvmlDeviceGetNvLinkState"]
        agent.health_tick()
        assert nvml.control.calls["nvmlDeviceGetNvLinkState"] - before == 8 * 18
    load = agent.holder.get().load
    assert load is not None
    assert [link.active for link in load.gpus[3].nvlinks].count(False) == 1
    assert len(load.gpus[0].nvlinks) == 18
    assert load.gpus[3].signals is not None and load.gpus[3].signals.nvlinks_down == 1


def test_slow_signals_are_re_read_every_tenth_tick_dgx_h100(tmp_path: Path) -> None:
    """NVLink states, lifetime ECC counts and memory repair state every 10th health tick;
    temperature, clocks, volatile ECC every tick."""
    from gputopo.agent.discovery import Discoverer
    from gputopo.agent.loop import SLOW_SIGNALS_EVERY, Agent, RunLoopConfig
    from gputopo.mocks.fake_pynvml import make_fake_pynvml
    from gputopo.mocks.profile import load_profile
    from gputopo.mocks.sysfs import build_sysfs

    machine = load_profile("dgx-h100")
    nvml = make_fake_pynvml(machine)
    build_sysfs(machine, tmp_path)
    with Discoverer(nvml, tmp_path, "node") as discoverer:
        agent = Agent(discoverer, publisher=None, config=RunLoopConfig(udev=False))
        agent.run_cycle()
        agent.health_tick()  # a full one
        nvml.control.set_nvlink_active(1, 2, False)
        nvml.control.set_temperature(1, 91)
        nvml.control.set_remapped_rows(1, pending=True)
        before = nvml.control.calls.copy()
        agent.health_tick()
        calls = nvml.control.calls - before
        load = agent.holder.get().load
        assert load is not None and load.gpus[1].signals is not None
        assert calls["nvmlDeviceGetNvLinkState"] == calls["nvmlDeviceGetRemappedRows"] == 0
        assert load.gpus[1].signals.temperature_c == 91  # fast: this tick
        assert load.gpus[1].signals.nvlinks_down == 0  # slow: not yet
        for _ in range(SLOW_SIGNALS_EVERY - 2):
            agent.health_tick()
        assert agent.holder.get().load.gpus[1].signals.nvlinks_down == 0  # type: ignore[union-attr]
        agent.health_tick()  # the tenth: slow signals re-read
        signals = agent.holder.get().load.gpus[1].signals  # type: ignore[union-attr]
        assert signals is not None
        assert signals.nvlinks_down == 1
        assert signals.memory_repair.remapped_rows_pending is True
