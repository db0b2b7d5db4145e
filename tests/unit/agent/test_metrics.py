"""The metrics collector's exposition, parsed back with prometheus_client's own parser."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from gputopo.agent.metrics import (
    GPU_LABELS,
    AgentStats,
    MetricsCollector,
    MetricsSnapshot,
    SnapshotHolder,
    build_registry,
)
from gputopo.agent.nvml import GpuLoad, MigDeviceLoad, NvlinkSample
from gputopo.agent.podresources import (
    AllocatableDevice,
    DeviceAllocation,
    PodResourcesSnapshot,
    unavailable,
)
from gputopo.agent.topology import (
    ComputeInstance,
    EccCounts,
    Gpu,
    GpuInstance,
    Health,
    HealthSignals,
    Interconnect,
    MigInfo,
    NodeInfo,
    NodeTopology,
    NumaNode,
    NvlinkDomain,
    NvmlStatus,
    XidEvent,
)
from gputopo.agent.usage import LoadSample, NumaMemory
from gputopo.core.serve import Probes, ProbeServer

MODEL = "NVIDIA H100 80GB HBM3"
UUIDS = [f"GPU-aaaaaaaa-0000-4000-8000-00000000000{i}" for i in range(4)]
MIG_UUID = "MIG-bbbbbbbb-0000-4000-8000-000000000001"


def small_dgx() -> NodeTopology:
    """Four H100s on two NUMA nodes, all in one NVSwitch domain; GPU 3 runs MIG (one 3g slice)."""
    gpus = []
    for index in range(4):
        mig = MigInfo()
        if index == 3:
            mig = MigInfo(
                capable=True,
                enabled=True,
                instances=(
                    GpuInstance(
                        id=1,
                        profile="3g.40gb",
                        compute_instances=(
                            ComputeInstance(id=0, profile="3g.40gb", uuid=MIG_UUID),
                        ),
                    ),
                ),
            )
        gpus.append(
            Gpu(
                index=index,
                pci_bus_id=f"0000:{0x18 + index * 0x10:02x}:00.0",
                uuid=UUIDS[index],
                name=MODEL,
                memory_mib=81559,
                numa_node=0 if index < 2 else 1,
                nvlink_domain=0,
                mig=mig,
                health=Health.FAILED if index == 2 else Health.OK,
                health_signals=HealthSignals(
                    temperature_c=40 + index,
                    power_w=100.5,
                    power_limit_w=700.0,
                    throttle_reasons=("gpu_idle",),
                    xid_events=(XidEvent(code=79, count=2),) if index == 2 else (),
                    ecc=EccCounts(volatile_corrected=3, aggregate_uncorrected=0),
                ),
            )
        )
    return NodeTopology(
        node=NodeInfo(hostname="dgx-01", product_name="DGXH100"),
        nvml=NvmlStatus(available=True),
        gpus=tuple(gpus),
        nvlink_domains=(NvlinkDomain(id=0, gpus=(0, 1, 2, 3), via=Interconnect.NVSWITCH),),
        numa_nodes=(NumaNode(id=0, cpus=(0, 1)), NumaNode(id=1, cpus=(2, 3))),
        interconnect=Interconnect.NVSWITCH,
    )


def load_sample() -> LoadSample:
    gpus = {
        i: GpuLoad(
            index=i,
            uuid=UUIDS[i],
            utilization_ratio=0.25 * i,
            memory_utilization_ratio=0.1,
            memory_used_bytes=1024 * i,
            memory_total_bytes=85520809984,
            nvlinks=(
                NvlinkSample(link=0, active=True, errors={"replay": 1, "crc_flit": 0}),
                NvlinkSample(link=1, active=i != 1, errors={"replay": 2}),
            ),
            mig_devices=(MigDeviceLoad(MIG_UUID, 4096, 42949672960),) if i == 3 else (),
            signals=HealthSignals(temperature_c=90 if i == 1 else 50, power_w=650.0)
            if i == 1
            else None,
        )
        for i in range(4)
    }
    return LoadSample(
        timestamp=1_700_000_000.0,
        gpus=gpus,
        cpu_utilization_ratio=0.5,
        numa_cpu_utilization_ratio={0: 0.25, 1: 0.75},
        numa_memory=(NumaMemory(0, 10 * 2**30, 64 * 2**30), NumaMemory(1, None, 64 * 2**30)),
    )


def pods() -> PodResourcesSnapshot:
    return PodResourcesSnapshot(
        available=True,
        allocations=(
            DeviceAllocation(UUIDS[0], "nvidia.com/gpu", "trainer-0", "ml", "main", (0,)),
            DeviceAllocation(UUIDS[1] + "::0", "nvidia.com/gpu", "a", "x", "c", (0,)),
            DeviceAllocation(UUIDS[1] + "::1", "nvidia.com/gpu", "b", "x", "c", (0,)),
            DeviceAllocation(MIG_UUID, "nvidia.com/mig-3g.40gb", "nb", "ds", "jupyter", (1,)),
        ),
        allocatable=(
            AllocatableDevice(UUIDS[0], "nvidia.com/gpu", (0,)),
            AllocatableDevice(UUIDS[1], "nvidia.com/gpu", (0,)),
            AllocatableDevice(UUIDS[2], "nvidia.com/gpu", (1,)),
            AllocatableDevice(MIG_UUID, "nvidia.com/mig-3g.40gb", (1,)),
        ),
    )


def scrape(snapshot: MetricsSnapshot, stats: AgentStats | None = None) -> dict[str, list[Sample]]:
    registry = build_registry(MetricsCollector(lambda: snapshot, stats, version="1.2.3"))
    text = generate_latest(registry).decode()
    samples: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def one(samples: dict[str, list[Sample]], name: str, **labels: str) -> float:
    matches = [
        s for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(matches) == 1, f"{name}{labels}: {len(matches)} samples: {samples.get(name)}"
    return matches[0].value


def test_per_gpu_series_carry_identity_labels_from_the_topology() -> None:
    samples = scrape(MetricsSnapshot(topology=small_dgx(), load=load_sample()))
    sample = next(s for s in samples["gputopo_gpu_utilization_ratio"] if s.labels["gpu"] == "2")
    assert set(sample.labels) == set(GPU_LABELS)
    assert sample.labels == {
        "gpu": "2",
        "uuid": UUIDS[2],
        "pci_bus_id": "0000:38:00.0",
        "model": MODEL,
        "numa_node": "1",
        "nvlink_domain": "0",
        "pod": "",
        "namespace": "",
        "container": "",
    }
    assert sample.value == 0.5


def test_load_sample_values_in_base_units() -> None:
    samples = scrape(MetricsSnapshot(topology=small_dgx(), load=load_sample()))
    assert one(samples, "gputopo_gpu_memory_used_bytes", gpu="3") == 3072
    assert one(samples, "gputopo_gpu_memory_total_bytes", gpu="0") == 85520809984
    assert one(samples, "gputopo_gpu_memory_bandwidth_utilization_ratio", gpu="0") == 0.1
    # GPU 1's load carries fresher health signals than discovery: they win.
    assert one(samples, "gputopo_gpu_temperature_celsius", gpu="1") == 90
    assert one(samples, "gputopo_gpu_power_watts", gpu="1") == 650.0
    assert one(samples, "gputopo_gpu_temperature_celsius", gpu="0") == 40
    assert one(samples, "gputopo_gpu_power_limit_watts", gpu="0") == 700.0
    assert one(samples, "gputopo_gpu_nvlink_up", gpu="1", link="1") == 0
    assert one(samples, "gputopo_gpu_nvlink_errors_total", gpu="0", counter="replay") == 3
    assert one(samples, "gputopo_node_cpu_utilization_ratio") == 0.5
    assert one(samples, "gputopo_numa_node_cpu_utilization_ratio", numa_node="1") == 0.75
    assert one(samples, "gputopo_numa_node_memory_used_bytes", numa_node="0") == 10 * 2**30
    assert one(samples, "gputopo_numa_node_memory_total_bytes", numa_node="1") == 64 * 2**30
    assert [s.labels["numa_node"] for s in samples["gputopo_numa_node_memory_used_bytes"]] == ["0"]


def test_health_xid_throttle_and_ecc_series() -> None:
    samples = scrape(MetricsSnapshot(topology=small_dgx(), load=load_sample()))
    assert one(samples, "gputopo_gpu_xid_errors_total", gpu="2", xid="79") == 2
    assert one(samples, "gputopo_gpu_health", gpu="2", state="failed") == 1
    assert one(samples, "gputopo_gpu_health", gpu="2", state="ok") == 0
    assert one(samples, "gputopo_gpu_throttled", gpu="0", reason="gpu_idle") == 1
    assert one(samples, "gputopo_gpu_throttled", gpu="0", reason="hw_slowdown") == 0
    assert (
        one(samples, "gputopo_gpu_ecc_errors_total", gpu="0", type="corrected", scope="volatile")
        == 3
    )
    # Unknown ECC counts are left out, not reported as zero.
    assert not [
        s
        for s in samples["gputopo_gpu_ecc_errors_total"]
        if s.labels["gpu"] == "0"
        and s.labels["type"] == "uncorrected"
        and s.labels["scope"] == "volatile"
    ]


def test_allocated_gpu_series_name_the_pod_and_shared_gpus_do_not() -> None:
    samples = scrape(
        MetricsSnapshot(topology=small_dgx(), load=load_sample(), pod_resources=pods())
    )
    trainer = one(samples, "gputopo_gpu_utilization_ratio", gpu="0", pod="trainer-0")
    assert trainer == 0.0
    assert one(samples, "gputopo_gpu_allocated_containers", gpu="0", namespace="ml") == 1
    # GPU 1 is time-sliced between two pods: per-GPU series stay unlabelled, the info has both.
    assert one(samples, "gputopo_gpu_allocated_containers", gpu="1", pod="") == 2
    holders = [s.labels["pod"] for s in samples["gputopo_device_allocation_info"]]
    assert sorted(holders) == ["a", "b", "nb", "trainer-0"]
    assert one(samples, "gputopo_gpu_allocated_containers", gpu="2") == 0
    assert one(samples, "gputopo_podresources_up") == 1
    assert one(samples, "gputopo_numa_node_gpus_allocatable", numa_node="0") == 2
    assert one(samples, "gputopo_numa_node_gpus_free", numa_node="1") == 1


def test_mig_device_series_carry_instance_labels_and_holder() -> None:
    samples = scrape(
        MetricsSnapshot(topology=small_dgx(), load=load_sample(), pod_resources=pods())
    )
    (info,) = samples["gputopo_mig_device_info"]
    assert info.labels == {
        "gpu": "3",
        "uuid": MIG_UUID,
        "pci_bus_id": "0000:48:00.0",
        "model": MODEL,
        "numa_node": "1",
        "nvlink_domain": "0",
        "gpu_instance": "1",
        "compute_instance": "0",
        "mig_profile": "3g.40gb",
        "pod": "nb",
        "namespace": "ds",
        "container": "jupyter",
    }
    assert one(samples, "gputopo_mig_device_memory_used_bytes", uuid=MIG_UUID) == 4096
    assert one(samples, "gputopo_mig_device_allocated_containers", uuid=MIG_UUID) == 1


def test_unreachable_kubelet_gives_no_allocation_series_and_says_so() -> None:
    snapshot = MetricsSnapshot(topology=small_dgx(), pod_resources=unavailable("socket missing"))
    samples = scrape(snapshot)
    assert one(samples, "gputopo_podresources_up") == 0
    assert "gputopo_gpu_allocated_containers" not in samples
    assert "gputopo_device_allocation_info" not in samples


def test_empty_snapshot_exposes_only_build_info() -> None:
    samples = scrape(MetricsSnapshot())
    assert set(samples) == {"gputopo_build_info"}
    assert samples["gputopo_build_info"][0].labels["version"] == "1.2.3"


def test_agent_work_counters_and_discovery_histogram() -> None:
    stats = AgentStats()
    stats.observe_discovery(0.07, at=1000.0)
    stats.observe_discovery(3.0, at=1001.0)
    stats.observe_discovery(120.0, success=False)
    stats.record_api_write("success", 3)
    stats.record_api_write("conflict")
    stats.record_publish_success(at=1234.5)
    samples = scrape(MetricsSnapshot(topology=small_dgx()), stats)
    buckets = {
        s.labels["le"]: s.value for s in samples["gputopo_agent_discovery_duration_seconds_bucket"]
    }
    assert buckets["0.05"] == 0 and buckets["0.1"] == 1 and buckets["5.0"] == 2
    assert buckets["+Inf"] == 3
    assert one(samples, "gputopo_agent_discovery_duration_seconds_count") == 3
    assert one(samples, "gputopo_agent_discovery_duration_seconds_sum") == pytest.approx(123.07)
    assert one(samples, "gputopo_agent_discoveries_total", outcome="error") == 1
    assert one(samples, "gputopo_agent_api_writes_total", outcome="success") == 3
    assert one(samples, "gputopo_agent_api_writes_total", outcome="conflict") == 1
    assert one(samples, "gputopo_agent_last_successful_publish_timestamp_seconds") == 1234.5
    assert one(samples, "gputopo_agent_last_discovery_timestamp_seconds") == 1001.0


def test_collect_reads_the_latest_snapshot_at_scrape_time() -> None:
    holder = SnapshotHolder()
    registry = build_registry(MetricsCollector(holder, version="x"))
    assert b"gputopo_gpu_info" not in generate_latest(registry)
    holder.update(topology=small_dgx())
    assert b"gputopo_gpu_info" in generate_latest(registry)
    holder.update(load=load_sample())
    assert holder.get().topology is not None  # updating one part keeps the others
    assert b"gputopo_gpu_utilization_ratio" in generate_latest(registry)


def test_openmetrics_exposition_is_valid() -> None:
    snapshot = MetricsSnapshot(topology=small_dgx(), load=load_sample(), pod_resources=pods())
    registry = build_registry(MetricsCollector(lambda: snapshot, AgentStats(), version="1"))
    text = generate_openmetrics(registry).decode()
    assert text.endswith("# EOF\n")
    assert "gputopo_gpu_xid_errors_total{" in text


def test_server_serves_metrics_and_probes_on_a_free_port() -> None:
    ready = {"ok": False}
    holder = SnapshotHolder(MetricsSnapshot(topology=small_dgx()))
    probes = Probes(readiness=lambda: (ready["ok"], "ready" if ready["ok"] else "no discovery yet"))
    registry = build_registry(MetricsCollector(holder, version="1"))
    with ProbeServer("127.0.0.1", 0, registry=registry, probes=probes) as server:
        with urllib.request.urlopen(server.url + "/metrics", timeout=5) as response:
            body = response.read().decode()
            assert response.headers["Content-Type"].startswith("text/plain")
        assert "gputopo_gpu_info{" in body
        with urllib.request.urlopen(server.url + "/healthz", timeout=5) as response:
            assert response.status == 200
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(server.url + "/readyz", timeout=5)
        assert refused.value.code == 503
        ready["ok"] = True
        with urllib.request.urlopen(server.url + "/readyz", timeout=5) as response:
            assert response.read() == b"ready\n"


def test_nrt_available_counts_gpus_free_of_whole_and_mig_allocations() -> None:
    from gputopo.agent.podresources import available_gpus_by_numa_node

    assert available_gpus_by_numa_node(pods(), small_dgx()) == {
        0: {"nvidia.com/gpu": 0},  # GPU 0 held, GPU 1 time-sliced
        1: {"nvidia.com/gpu": 1},  # GPU 2 free, GPU 3's MIG slice held
    }
    assert available_gpus_by_numa_node(unavailable("no kubelet"), small_dgx()) is None


@pytest.mark.parametrize(
    "profile",
    ["dgx-h100", "dgx-a100-mig", "dgx-h100-degraded", "gb200-nvl4", "l4-pcie", "cpu-only"],
)
def test_every_builtin_profile_renders_one_series_set_per_gpu(profile: str, tmp_path: Path) -> None:
    """Discovery + load sampling + collection over the mocks' machines, parsed back."""
    from gputopo.agent.discovery import Discoverer
    from gputopo.agent.usage import LoadSampler
    from gputopo.mocks.fake_pynvml import make_fake_pynvml
    from gputopo.mocks.profile import load_profile
    from gputopo.mocks.sysfs import build_sysfs

    machine = load_profile(profile)
    nvml = make_fake_pynvml(machine)
    build_sysfs(machine, tmp_path)
    with Discoverer(nvml, tmp_path, "node") as discoverer:
        topology = discoverer.discover()
        signals = discoverer.adapter.health_signals()
        load = LoadSampler(tmp_path).sample(discoverer.adapter.module, topology, signals)
    samples = scrape(MetricsSnapshot(topology=topology, load=load))
    gpus = len(topology.gpus)
    assert len(samples.get("gputopo_gpu_info", [])) == gpus
    assert one(samples, "gputopo_gpus") == gpus
    uuids = {s.labels["uuid"] for s in samples.get("gputopo_gpu_memory_total_bytes", [])}
    assert uuids == {g.uuid for g in topology.gpus if g.uuid}
    mig_devices = [
        c.uuid for g in topology.gpus for i in g.mig.instances for c in i.compute_instances
    ]
    assert len(samples.get("gputopo_mig_device_info", [])) == len(mig_devices)
    if mig_devices:
        totals = samples["gputopo_mig_device_memory_total_bytes"]
        assert {s.labels["uuid"] for s in totals} == set(mig_devices)
        assert all(s.labels["mig_profile"] and s.labels["gpu_instance"] for s in totals)
