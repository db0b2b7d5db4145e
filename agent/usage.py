"""Per-second load: what each GPU is doing now, and how busy the node's CPUs and NUMA memory are.

Discovery (every minute) says what the node *is*; this module says how busy it is, for the
metrics endpoint only — nothing here is ever written to the Kubernetes API.

The GPU part is sampled by the NVML layer (:func:`gputopo.agent.nvml.sample_gpus`, through the
module object the NVML adapter loaded, ``NvmlAdapter.module``: the real ``pynvml`` or the fake from
``mocks/``); this module adds the CPUs (psutil) and NUMA memory (sysfs) and puts the three in
one :class:`LoadSample`.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from gputopo.agent.nvml import GpuLoad, sample_gpus
from gputopo.agent.topology import HealthSignals, NodeTopology


@dataclass(frozen=True)
class NumaMemory:
    numa_node: int
    used_bytes: int | None
    total_bytes: int | None


@dataclass(frozen=True)
class LoadSample:
    """Everything per-second about the node, taken at ``timestamp`` (seconds since the epoch)."""

    timestamp: float
    gpus: Mapping[int, GpuLoad] = field(default_factory=dict)
    cpu_utilization_ratio: float | None = None  # whole node, since the previous sample
    numa_cpu_utilization_ratio: Mapping[int, float] = field(default_factory=dict)
    numa_memory: tuple[NumaMemory, ...] = ()


_MEMINFO_LINE = re.compile(r"^Node\s+\d+\s+(\w+):\s+([0-9]+)\s*kB", re.MULTILINE)


def read_numa_memory(sysfs_root: str | os.PathLike[str] = "/sys") -> tuple[NumaMemory, ...]:
    """MemUsed and MemTotal per NUMA node, from ``<sysfs>/devices/system/node/nodeN/meminfo``."""
    base = Path(sysfs_root) / "devices" / "system" / "node"
    try:
        names = os.listdir(base)
    except OSError:
        return ()
    nodes = []
    for name in sorted(names, key=lambda n: (len(n), n)):
        if not (name.startswith("node") and name[4:].isdigit()):
            continue
        try:
            text = (base / name / "meminfo").read_text()
        except OSError:
            continue
        values = {key: int(kb) * 1024 for key, kb in _MEMINFO_LINE.findall(text)}
        used = values.get("MemUsed")
        total = values.get("MemTotal")
        if used is None and total is not None and "MemFree" in values:
            used = total - values["MemFree"]
        nodes.append(NumaMemory(numa_node=int(name[4:]), used_bytes=used, total_bytes=total))
    return tuple(nodes)


class CpuUtilization:
    """Busy share of each CPU between consecutive :meth:`sample` calls (psutil CPU times).

    The first call has nothing to compare with and reports unknown.
    """

    def __init__(self, cpu_times: Callable[[], Sequence[Any]] | None = None) -> None:
        self._cpu_times = cpu_times or (lambda: psutil.cpu_times(percpu=True))
        self._previous: list[tuple[float, float]] | None = None

    def sample(self) -> dict[int, float] | None:
        """CPU number -> busy ratio since the previous call, or None on the first call."""
        current = [(_busy_seconds(times), _total_seconds(times)) for times in self._cpu_times()]
        previous, self._previous = self._previous, current
        if previous is None or len(previous) != len(current):
            return None
        ratios = {}
        for cpu, ((busy_now, total_now), (busy_then, total_then)) in enumerate(
            zip(current, previous, strict=True)
        ):
            elapsed = total_now - total_then
            if elapsed > 0:
                ratios[cpu] = max(0.0, min(1.0, (busy_now - busy_then) / elapsed))
        return ratios


def _total_seconds(times: Any) -> float:
    # guest time is already counted in user time on Linux
    return float(sum(getattr(times, name, 0.0) for name in times._fields if "guest" not in name))


def _busy_seconds(times: Any) -> float:
    idle = float(getattr(times, "idle", 0.0)) + float(getattr(times, "iowait", 0.0))
    return _total_seconds(times) - idle


def numa_cpu_ratios(
    per_cpu: Mapping[int, float], topology: NodeTopology | None
) -> dict[int, float]:
    """Average busy ratio of each NUMA node's CPUs (CPU-less NUMA nodes are left out)."""
    if topology is None:
        return {}
    result = {}
    for numa in topology.numa_nodes:
        ratios = [per_cpu[cpu] for cpu in numa.cpus if cpu in per_cpu]
        if ratios:
            result[numa.id] = sum(ratios) / len(ratios)
    return result


class LoadSampler:
    """Takes :class:`LoadSample` s: the run loop calls :meth:`sample` on its health tick."""

    def __init__(
        self,
        sysfs_root: str | os.PathLike[str] = "/sys",
        *,
        cpu: CpuUtilization | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sysfs_root = sysfs_root
        self.cpu = cpu or CpuUtilization()
        self.clock = clock
        self._module: Any = None
        self._absent_functions: set[str] = set()
        self._previous_gpus: Mapping[int, GpuLoad] = {}

    def sample(
        self,
        module: Any,
        topology: NodeTopology | None,
        signals: Mapping[int, HealthSignals] | None = None,
        nvlink_states: Mapping[int, Sequence[bool]] | None = None,
    ) -> LoadSample:
        if module is not self._module:
            self._module, self._absent_functions, self._previous_gpus = module, set(), {}
        per_cpu = self.cpu.sample()
        node_ratio = None
        if per_cpu:
            node_ratio = sum(per_cpu.values()) / len(per_cpu)
        gpus = sample_gpus(
            module, signals, self._absent_functions, nvlink_states, self._previous_gpus
        )
        self._previous_gpus = gpus
        return LoadSample(
            timestamp=self.clock(),
            gpus=gpus,
            cpu_utilization_ratio=node_ratio,
            numa_cpu_utilization_ratio=numa_cpu_ratios(per_cpu or {}, topology),
            numa_memory=read_numa_memory(self.sysfs_root),
        )
