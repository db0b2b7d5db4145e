"""The agent's ``/metrics``: a custom collector over the latest snapshot, built at scrape time.

Following prometheus/client_python's advice for exporters, nothing here keeps gauges that a loop
mutates. The run loop replaces the :class:`MetricsSnapshot` in a :class:`SnapshotHolder`
(topology each discovery, load each health tick, pod-resources each cycle) and records its work
in :class:`AgentStats`, both in :mod:`agent.stats`; :meth:`MetricsCollector.collect` turns
whatever is latest into metric families when Prometheus scrapes. Every series, label and unit
is listed in docs/metrics.md. The HTTP side (``/metrics``, ``/healthz``, ``/readyz``) is the one
server both deployables use, :class:`gputopo.core.serve.ProbeServer`.

Labels: per-GPU series carry ``gpu`` (NVML index), ``uuid``, ``pci_bus_id``, ``model``,
``numa_node``, ``nvlink_domain`` and — from the kubelet's pod-resources API — ``pod``,
``namespace``, ``container`` of the one container holding the GPU (empty when free, shared, or
unknown). MIG device series add ``gpu_instance``, ``compute_instance`` and ``mig_profile`` and
carry the MIG device's UUID as ``uuid``. An empty label value means unknown or not applicable.
Unknown numbers are left out (no series), never reported as zero.

One file, over 500 lines, on purpose: it is one collector, whose families share the label
builders above and are written section by section in the order docs/metrics.md lists them, so a
reader checks one against the other top to bottom; what the loop records lives apart, in
:mod:`agent.stats`.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import CollectorRegistry

from gputopo import __version__
from gputopo.agent.nvml import CLOCK_EVENT_REASONS, NVLINK_ERROR_COUNTERS, GpuLoad
from gputopo.agent.podresources import DeviceAllocation, PodResourcesSnapshot
from gputopo.agent.sla import assess as assess_sla
from gputopo.agent.stats import (
    DISCOVERY_BUCKETS,
    AgentStats,
    AgentStatsSnapshot,
    MetricsSnapshot,
    SnapshotHolder,
)
from gputopo.agent.topology import (
    ComputeInstance,
    Gpu,
    GpuInstance,
    Health,
    HealthSignals,
    NodeTopology,
    count_nvml_errors,
)
from gputopo.agent.usage import LoadSample

PREFIX = "gputopo_"
GPU_LABELS = (
    "gpu",
    "uuid",
    "pci_bus_id",
    "model",
    "numa_node",
    "nvlink_domain",
    "pod",
    "namespace",
    "container",
)
MIG_LABELS = (*GPU_LABELS[:6], "gpu_instance", "compute_instance", "mig_profile", *GPU_LABELS[6:])
THROTTLE_REASONS = tuple(name for _, name in CLOCK_EVENT_REASONS)


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _gpu_labels(gpu: Gpu, holder: DeviceAllocation | None) -> list[str]:
    return [
        str(gpu.index),
        _text(gpu.uuid),
        gpu.pci_bus_id,
        _text(gpu.name),
        _text(gpu.numa_node),
        _text(gpu.nvlink_domain),
        holder.pod if holder else "",
        holder.namespace if holder else "",
        holder.container if holder else "",
    ]


def _single(allocations: tuple[DeviceAllocation, ...]) -> DeviceAllocation | None:
    """The holder to put on per-device series: only when exactly one container holds it."""
    return allocations[0] if len(allocations) == 1 else None


class _Families:
    """Metric families by name, created on first use so empty families are not exposed."""

    def __init__(self) -> None:
        self._families: dict[str, Metric] = {}

    def gauge(self, name: str, documentation: str, labels: Iterable[str], unit: str = "") -> Any:
        if name not in self._families:
            self._families[name] = GaugeMetricFamily(
                PREFIX + name, documentation, labels=list(labels), unit=unit
            )
        return self._families[name]

    def counter(self, name: str, documentation: str, labels: Iterable[str]) -> Any:
        if name not in self._families:
            self._families[name] = CounterMetricFamily(
                PREFIX + name, documentation, labels=list(labels)
            )
        return self._families[name]

    def add(self, family: Metric) -> None:
        self._families[family.name] = family

    def __iter__(self) -> Iterator[Metric]:
        return iter(self._families.values())


class MetricsCollector:
    """A prometheus-client collector: ``collect()`` renders the holder's latest snapshot."""

    def __init__(
        self,
        source: SnapshotHolder | Callable[[], MetricsSnapshot],
        stats: AgentStats | None = None,
        *,
        version: str | None = None,
    ) -> None:
        self._source: Callable[[], MetricsSnapshot] = (
            source.get if isinstance(source, SnapshotHolder) else source
        )
        self.stats = stats
        self.version = version or __version__

    def describe(self) -> list[Metric]:
        # Series depend on the snapshot; an empty description keeps registration from scraping.
        return []

    def collect(self) -> Iterator[Metric]:
        snapshot = self._source()
        families = _Families()
        self._build_info(families)
        self._node(families, snapshot)
        if snapshot.topology is not None:
            self._gpus(families, snapshot)
            self._domains(families, snapshot.topology)
        self._numa(families, snapshot)
        self._pod_resources(families, snapshot.pod_resources)
        if self.stats is not None:
            self._agent(families, self.stats.snapshot(), snapshot)
        yield from families

    # -- node ---------------------------------------------------------------------------------

    def _build_info(self, families: _Families) -> None:
        families.gauge(
            "build_info",
            "The running gputopo agent's version; always 1.",
            ["version", "python_version"],
        ).add_metric([self.version, platform.python_version()], 1)

    def _node(self, families: _Families, snapshot: MetricsSnapshot) -> None:
        topology = snapshot.topology
        if topology is not None:
            families.gauge(
                "node_info",
                "Static facts about the node from the last discovery; always 1.",
                [
                    "node",
                    "product",
                    "interconnect",
                    "driver_version",
                    "cuda_driver_version",
                ],
            ).add_metric(
                [
                    topology.node.hostname,
                    _text(topology.node.product_name),
                    topology.interconnect.value,
                    _text(topology.driver.driver_version),
                    _text(topology.driver.cuda_driver_version),
                ],
                1,
            )
            families.gauge(
                "nvml_up", "1 if NVML loaded and initialised at the last discovery.", []
            ).add_metric([], 1 if topology.nvml.available else 0)
            families.gauge("gpus", "GPUs NVML describes on this node.", []).add_metric(
                [], len(topology.gpus)
            )
            pci_only = families.gauge(
                "pci_only_gpu_info",
                "An NVIDIA GPU on the PCI bus that NVML does not describe; always 1.",
                ["pci_bus_id", "numa_node", "driver"],
            )
            for missing in topology.pci_only_gpus:
                pci_only.add_metric(
                    [missing.pci_bus_id, _text(missing.numa_node), _text(missing.driver)], 1
                )
            sla = assess_sla(topology)
            if sla is not None:
                families.gauge(
                    "node_sla_score",
                    "The node's raw SLA score (0..1000) from the last discovery, before the "
                    "hysteresis that filters the published label and taint.",
                    [],
                ).add_metric([], sla.score)
        load = snapshot.load
        if load is not None and load.cpu_utilization_ratio is not None:
            families.gauge(
                "node_cpu_utilization_ratio",
                "Share of the node's CPU time that was busy between the last two samples.",
                [],
            ).add_metric([], load.cpu_utilization_ratio)

    # -- GPUs ---------------------------------------------------------------------------------

    def _gpus(self, families: _Families, snapshot: MetricsSnapshot) -> None:
        topology = snapshot.topology
        assert topology is not None
        pods = snapshot.pod_resources
        loads = _loads_by_gpu(topology, snapshot.load)
        for gpu in topology.gpus:
            allocations = pods.allocations_for(gpu.uuid) if pods and pods.available else ()
            labels = _gpu_labels(gpu, _single(allocations))
            self._gpu_static(families, gpu, labels)
            if pods is not None and pods.available:
                families.gauge(
                    "gpu_allocated_containers",
                    "Containers the kubelet has given this GPU to (0: free); "
                    "absent when pod-resources is unreachable.",
                    GPU_LABELS,
                ).add_metric(labels, len(allocations))
            load = loads.get(gpu.index)
            if load is not None:
                self._gpu_load(families, load, labels)
            signals = load.signals if load is not None and load.signals else gpu.health_signals
            self._gpu_signals(families, signals, labels)
            self._mig(families, gpu, load, pods)

    def _gpu_static(self, families: _Families, gpu: Gpu, labels: list[str]) -> None:
        families.gauge(
            "gpu_info",
            "Static facts about a GPU from the last discovery; always 1.",
            [*GPU_LABELS, "architecture", "compute_capability", "pcie_switch", "mig_enabled"],
        ).add_metric(
            [
                *labels,
                _text(gpu.architecture),
                _text(gpu.compute_capability),
                _text(gpu.pcie_switch),
                _text(gpu.mig.enabled).lower(),
            ],
            1,
        )
        health = families.gauge(
            "gpu_health",
            "1 for the GPU's current health state (ok, degraded, failed), 0 for the others.",
            [*GPU_LABELS, "state"],
        )
        for state in Health:
            health.add_metric([*labels, state.value], 1 if gpu.health is state else 0)
        if gpu.nvml_errors:
            errors = families.gauge(
                "gpu_nvml_errors",
                "NVML queries about this GPU that failed at the last discovery, by call and "
                "error (NO_PERMISSION on a MIG GPU: the agent lacks the MIG monitor capability).",
                [*GPU_LABELS, "call", "error"],
            )
            for failure, count in count_nvml_errors(gpu.nvml_errors).items():
                call, _, error = failure.partition(": ")
                errors.add_metric([*labels, call, error], count)

    def _gpu_load(self, families: _Families, load: GpuLoad, labels: list[str]) -> None:
        if load.utilization_ratio is not None:
            families.gauge(
                "gpu_utilization_ratio",
                "Share of the last NVML sample period in which a kernel ran on the GPU.",
                GPU_LABELS,
            ).add_metric(labels, load.utilization_ratio)
        if load.memory_utilization_ratio is not None:
            families.gauge(
                "gpu_memory_bandwidth_utilization_ratio",
                "Share of the last NVML sample period in which GPU memory was read or written.",
                GPU_LABELS,
            ).add_metric(labels, load.memory_utilization_ratio)
        if load.memory_used_bytes is not None:
            families.gauge("gpu_memory_used_bytes", "GPU memory in use.", GPU_LABELS).add_metric(
                labels, load.memory_used_bytes
            )
        if load.memory_total_bytes is not None:
            families.gauge(
                "gpu_memory_total_bytes", "GPU memory in total, as NVML reports it.", GPU_LABELS
            ).add_metric(labels, load.memory_total_bytes)
        if load.nvlinks:
            link_up = families.gauge(
                "gpu_nvlink_up",
                "1 if the NVLink is active, 0 if it is down.",
                [*GPU_LABELS, "link"],
            )
            errors = families.counter(
                "gpu_nvlink_errors",
                "NVLink data-link errors on all the GPU's links, by NVML counter.",
                [*GPU_LABELS, "counter"],
            )
            for sample in load.nvlinks:
                if sample.active is not None:
                    link_up.add_metric([*labels, str(sample.link)], 1 if sample.active else 0)
            for _, counter in NVLINK_ERROR_COUNTERS:
                values = [s.errors[counter] for s in load.nvlinks if counter in s.errors]
                if values:
                    errors.add_metric([*labels, counter], sum(values))
        families.gauge(
            "gpu_lost", "1 if NVML reported the GPU lost (fell off the bus).", GPU_LABELS
        ).add_metric(labels, 1 if load.lost else 0)

    def _gpu_signals(self, families: _Families, signals: HealthSignals, labels: list[str]) -> None:
        if signals.temperature_c is not None:
            families.gauge(
                "gpu_temperature_celsius", "GPU core temperature.", GPU_LABELS
            ).add_metric(labels, signals.temperature_c)
        if signals.power_w is not None:
            families.gauge("gpu_power_watts", "GPU board power draw.", GPU_LABELS).add_metric(
                labels, signals.power_w
            )
        if signals.power_limit_w is not None:
            families.gauge(
                "gpu_power_limit_watts", "The enforced GPU power limit.", GPU_LABELS
            ).add_metric(labels, signals.power_limit_w)
        if signals.throttle_reasons is not None:
            throttled = families.gauge(
                "gpu_throttled",
                "1 if this clock-event (throttle) reason is active now, else 0.",
                [*GPU_LABELS, "reason"],
            )
            for reason in THROTTLE_REASONS:
                throttled.add_metric(
                    [*labels, reason], 1 if reason in signals.throttle_reasons else 0
                )
        xids = families.counter(
            "gpu_xid_errors",
            "XID error events seen by the agent since it started, by XID code.",
            [*GPU_LABELS, "xid"],
        )
        for event in signals.xid_events:
            xids.add_metric([*labels, str(event.code)], event.count)
        ecc = signals.ecc
        ecc_family = families.counter(
            "gpu_ecc_errors",
            "ECC errors: scope volatile (since the driver loaded) or aggregate (lifetime).",
            [*GPU_LABELS, "type", "scope"],
        )
        for value, kind, scope in (
            (ecc.volatile_corrected, "corrected", "volatile"),
            (ecc.volatile_uncorrected, "uncorrected", "volatile"),
            (ecc.aggregate_corrected, "corrected", "aggregate"),
            (ecc.aggregate_uncorrected, "uncorrected", "aggregate"),
        ):
            if value is not None:
                ecc_family.add_metric([*labels, kind, scope], value)
        repair = signals.memory_repair
        rows = families.gauge(
            "gpu_remapped_rows", "GPU memory rows remapped, by type.", [*GPU_LABELS, "type"]
        )
        for value, kind in (
            (repair.remapped_rows_correctable, "correctable"),
            (repair.remapped_rows_uncorrectable, "uncorrectable"),
        ):
            if value is not None:
                rows.add_metric([*labels, kind], value)
        pages = families.gauge(
            "gpu_retired_pages", "GPU memory pages retired, by cause.", [*GPU_LABELS, "cause"]
        )
        for value, cause in (
            (repair.retired_pages_single_bit, "single_bit"),
            (repair.retired_pages_double_bit, "double_bit"),
        ):
            if value is not None:
                pages.add_metric([*labels, cause], value)
        pending = [
            p for p in (repair.remapped_rows_pending, repair.retired_pages_pending) if p is not None
        ]
        if pending:
            families.gauge(
                "gpu_memory_repair_pending",
                "1 if a row remap or page retirement waits for the next GPU reset.",
                GPU_LABELS,
            ).add_metric(labels, 1 if any(pending) else 0)
        families.gauge(
            "gpu_nvlinks_down",
            "Inactive NVLinks on a GPU that has active ones (a partly broken fabric).",
            GPU_LABELS,
        ).add_metric(labels, signals.nvlinks_down)

    def _mig(
        self,
        families: _Families,
        gpu: Gpu,
        load: GpuLoad | None,
        pods: PodResourcesSnapshot | None,
    ) -> None:
        if not gpu.mig.instances:
            return
        memory = {m.uuid: m for m in load.mig_devices} if load is not None else {}
        for instance, compute in _mig_devices(gpu.mig.instances):
            allocations = (
                pods.allocations_for(compute.uuid) if pods is not None and pods.available else ()
            )
            holder = _single(allocations)
            base = _gpu_labels(gpu, holder)
            labels = [
                base[0],
                _text(compute.uuid),
                *base[2:6],
                str(instance.id),
                str(compute.id),
                compute.profile,
                *base[6:],
            ]
            families.gauge(
                "mig_device_info", "A MIG device (one compute instance); always 1.", MIG_LABELS
            ).add_metric(labels, 1)
            if pods is not None and pods.available:
                families.gauge(
                    "mig_device_allocated_containers",
                    "Containers the kubelet has given this MIG device to (0: free).",
                    MIG_LABELS,
                ).add_metric(labels, len(allocations))
            sample = memory.get(compute.uuid or "")
            if sample is not None and sample.memory_used_bytes is not None:
                families.gauge(
                    "mig_device_memory_used_bytes", "MIG device memory in use.", MIG_LABELS
                ).add_metric(labels, sample.memory_used_bytes)
            if sample is not None and sample.memory_total_bytes is not None:
                families.gauge(
                    "mig_device_memory_total_bytes", "MIG device memory in total.", MIG_LABELS
                ).add_metric(labels, sample.memory_total_bytes)

    # -- fabric, NUMA, pod-resources ----------------------------------------------------------

    def _domains(self, families: _Families, topology: NodeTopology) -> None:
        domains = families.gauge(
            "nvlink_domain_gpus",
            "GPUs in an NVLink domain (mutually reachable over NVLink or NVSwitch).",
            ["nvlink_domain", "via"],
        )
        for domain in topology.nvlink_domains:
            domains.add_metric([str(domain.id), domain.via.value], len(domain.gpus))

    def _numa(self, families: _Families, snapshot: MetricsSnapshot) -> None:
        load = snapshot.load
        if load is None:
            return
        used = families.gauge(
            "numa_node_memory_used_bytes", "Memory in use on a NUMA node (MemUsed).", ["numa_node"]
        )
        total = families.gauge(
            "numa_node_memory_total_bytes", "Memory on a NUMA node (MemTotal).", ["numa_node"]
        )
        for memory in load.numa_memory:
            if memory.used_bytes is not None:
                used.add_metric([str(memory.numa_node)], memory.used_bytes)
            if memory.total_bytes is not None:
                total.add_metric([str(memory.numa_node)], memory.total_bytes)
        cpu = families.gauge(
            "numa_node_cpu_utilization_ratio",
            "Share of a NUMA node's CPU time that was busy between the last two samples.",
            ["numa_node"],
        )
        for numa_node, ratio in sorted(load.numa_cpu_utilization_ratio.items()):
            cpu.add_metric([str(numa_node)], ratio)

    def _pod_resources(self, families: _Families, pods: PodResourcesSnapshot | None) -> None:
        if pods is None:
            return
        families.gauge(
            "podresources_up", "1 if the kubelet's pod-resources API answered the last call.", []
        ).add_metric([], 1 if pods.available else 0)
        if not pods.available:
            return
        info = families.gauge(
            "device_allocation_info",
            "A GPU or MIG device held by a container (from the kubelet); always 1.",
            ["uuid", "resource", "pod", "namespace", "container"],
        )
        for allocation in pods.allocations:
            info.add_metric(
                [
                    allocation.device_id.split("::", 1)[0],
                    allocation.resource_name,
                    allocation.pod,
                    allocation.namespace,
                    allocation.container,
                ],
                1,
            )
        if pods.allocatable is None:
            return
        allocatable = families.gauge(
            "numa_node_gpus_allocatable",
            "GPU and MIG devices the kubelet may hand out, by the NUMA node of their topology "
            "hint (empty: no hint).",
            ["numa_node"],
        )
        free = families.gauge(
            "numa_node_gpus_free",
            "Allocatable GPU and MIG devices that no container holds, by NUMA node.",
            ["numa_node"],
        )
        for numa_node, ids in pods.allocatable_by_numa_node().items():
            allocatable.add_metric([_text(numa_node)], len(ids))
        for numa_node, ids in pods.free_by_numa_node().items():
            free.add_metric([_text(numa_node)], len(ids))

    # -- the agent itself ---------------------------------------------------------------------

    def _agent(
        self, families: _Families, stats: AgentStatsSnapshot, snapshot: MetricsSnapshot
    ) -> None:
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip(
            (*(str(b) for b in DISCOVERY_BUCKETS), "+Inf"),
            stats.discovery_bucket_counts,
            strict=True,
        ):
            cumulative += count
            buckets.append((bound, cumulative))
        families.add(
            HistogramMetricFamily(
                PREFIX + "agent_discovery_duration_seconds",
                "Wall time of one full discovery (NVML and sysfs).",
                buckets=buckets,
                sum_value=stats.discovery_sum_seconds,
            )
        )
        discoveries = families.counter(
            "agent_discoveries", "Full discoveries by outcome.", ["outcome"]
        )
        for outcome, count in sorted(stats.discoveries.items()):
            discoveries.add_metric([outcome], count)
        writes = families.counter(
            "agent_api_writes", "Kubernetes API writes by outcome.", ["outcome"]
        )
        for outcome, count in sorted(stats.api_writes.items()):
            writes.add_metric([outcome], count)
        self._publish_checks(families, stats)
        if stats.last_successful_publish is not None:
            families.gauge(
                "agent_last_successful_publish_timestamp_seconds",
                "When the agent last published labels, taints and topology without error.",
                [],
            ).add_metric([], stats.last_successful_publish)
        if stats.last_discovery is not None:
            families.gauge(
                "agent_last_discovery_timestamp_seconds",
                "When the last successful discovery finished.",
                [],
            ).add_metric([], stats.last_discovery)
        if snapshot.load is not None:
            families.gauge(
                "agent_load_sample_timestamp_seconds",
                "When the GPU and NUMA load behind these metrics was sampled.",
                [],
            ).add_metric([], snapshot.load.timestamp)

    @staticmethod
    def _publish_checks(families: _Families, stats: AgentStatsSnapshot) -> None:
        """What the publisher refused to trust: partial discoveries, forged ownership claims."""
        families.counter(
            "agent_partial_discoveries",
            "Discoveries with an NVML or sysfs read error: the Node kept its last good "
            "topology values.",
            [],
        ).add_metric([], stats.partial_discoveries)
        families.gauge(
            "agent_foreign_owned_keys",
            "Entries of the Node's ownership annotations naming keys gputopo never writes "
            "(ignored), as last read.",
            [],
        ).add_metric([], stats.foreign_owned_keys)
        families.gauge(
            "agent_nrt_foreign_writer",
            "1 while this node's NodeResourceTopology is another writer's (NFD's "
            "topology-updater): the agent steps back and does not write it.",
            [],
        ).add_metric([], stats.foreign_nrt)
        conflicts = families.gauge(
            "agent_label_conflicts",
            "1 per nvidia.com/* label another writer (GPU Feature Discovery) holds with a value "
            "other than gputopo's: gputopo leaves it alone and does not write it.",
            ["key", "holder"],
        )
        for key, holder in sorted(stats.label_conflicts.items()):
            conflicts.add_metric([key, holder], 1)
        upgrade = families.gauge(
            "agent_driver_upgrade_in_progress",
            "1 while the GPU Operator upgrades this node's driver (state in the label "
            "nvidia.com/gpu-driver-upgrade-state) and the agent has released NVML: no "
            "discovery, no GPU samples, no Node writes until it ends.",
            ["state"],
        )
        upgrade.add_metric([stats.driver_upgrade or ""], 1 if stats.driver_upgrade else 0)


def _loads_by_gpu(topology: NodeTopology, load: LoadSample | None) -> dict[int, GpuLoad]:
    """Load samples matched to discovered GPUs: by UUID when both know it, else by index."""
    if load is None:
        return {}
    by_uuid = {sample.uuid: sample for sample in load.gpus.values() if sample.uuid}
    result = {}
    for gpu in topology.gpus:
        sample = by_uuid.get(gpu.uuid) if gpu.uuid else None
        if sample is None:
            candidate = load.gpus.get(gpu.index)
            if candidate is not None and (not candidate.uuid or not gpu.uuid):
                sample = candidate
        if sample is not None:
            result[gpu.index] = sample
    return result


def _mig_devices(
    instances: tuple[GpuInstance, ...],
) -> Iterator[tuple[GpuInstance, ComputeInstance]]:
    for instance in instances:
        for compute in instance.compute_instances:
            yield instance, compute


def build_registry(collector: MetricsCollector) -> CollectorRegistry:
    """A registry holding only the gputopo collector (no process/platform collectors)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
