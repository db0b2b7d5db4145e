"""gputopo_gpu_nvml_errors: the NVML queries that failed per GPU at the last discovery, by call
and error (issue 15 #3: NO_PERMISSION on MIG GPUs without the monitor capability)."""

from __future__ import annotations

from dataclasses import replace

from gputopo.agent.metrics import MetricsSnapshot
from gputopo.agent.topology import NodeInfo, NodeTopology, NvmlStatus
from tests.unit.agent.machines import h100
from tests.unit.agent.test_metrics import one, scrape


def test_failed_nvml_queries_are_counted_by_call_and_error_per_gpu() -> None:
    failing = replace(
        h100(0, 0),
        nvml_errors=(
            "nvmlDeviceGetMemoryInfo: NoPermission",
            "nvmlDeviceGetMigDeviceHandleByIndex: NoPermission",
            "nvmlDeviceGetMigDeviceHandleByIndex: NoPermission",
        ),
    )
    topology = NodeTopology(
        node=NodeInfo(hostname="n"), nvml=NvmlStatus(True), gpus=(failing, h100(1, 0))
    )
    samples = scrape(MetricsSnapshot(topology=topology))
    name = "gputopo_gpu_nvml_errors"
    denied = {"gpu": "0", "error": "NoPermission"}
    assert one(samples, name, call="nvmlDeviceGetMigDeviceHandleByIndex", **denied) == 2
    assert one(samples, name, call="nvmlDeviceGetMemoryInfo", **denied) == 1
    assert not [s for s in samples[name] if s.labels["gpu"] == "1"]
