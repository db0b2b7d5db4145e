"""The running agent under transient read errors, against a real kube-apiserver: one NVML
UNKNOWN on one GPU and /sys unreadable for 1.5 s make zero Node writes.

Machine: the mocked DGX H100 (fake pynvml + fake sysfs from the `dgx-h100` profile), the agent
in-process with its metrics server, publishing as the admin (tests/integration/test_agent_faults).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest
from kubernetes import client

from gputopo.agent.loop import RunLoopConfig
from tests.controlplane import ClusterObjects, ControlPlane
from tests.integration.test_agent_faults import bare_node, labels_of, read_node, running_agent
from tests.polling import eventually

pytestmark = pytest.mark.integration


def test_transient_nvml_errors_and_unreadable_sys_make_zero_node_writes(
    control_plane: ControlPlane,
    cluster_objects: ClusterObjects,
    kube_admin: client.ApiClient,
    tmp_path: Path,
) -> None:
    name = f"dgx-{uuid.uuid4().hex[:8]}"
    cluster_objects.create_node(bare_node(name))
    sysfs = tmp_path / "sys"
    config = RunLoopConfig(
        interval_s=0.2, jitter=0.0, health_interval_s=0.2, min_trigger_interval_s=0.2, udev=False
    )
    with running_agent(control_plane, name, sysfs, config) as running:
        agent, control = running.agent, running.control
        eventually(lambda: agent.readiness()[0], what="first publish")
        before = read_node(kube_admin, name)
        assert labels_of(before)["nvidia.com/gpu.count"] == "8"
        assert agent.stats.snapshot().api_writes == {"success": 1}

        control.inject_error("nvmlDeviceGetName", "UNKNOWN", index=2, times=1)
        control.inject_error("nvmlDeviceGetNvLinkState", "UNKNOWN", index=5, times=1)
        cycles = agent.cycles
        eventually(lambda: agent.cycles >= cycles + 3, what="three cycles past the NVML errors")

        away = sysfs.with_name("sys-away")
        os.rename(sysfs, away)
        try:
            cycles = agent.cycles
            time.sleep(1.5)
            assert agent.cycles >= cycles + 2, "no discovery ran while /sys was unreadable"
        finally:
            os.rename(away, sysfs)
        cycles = agent.cycles
        eventually(lambda: agent.cycles >= cycles + 5, what="five cycles after /sys is back")

        after = read_node(kube_admin, name)
        assert after.metadata.resource_version == before.metadata.resource_version
        assert labels_of(after) == labels_of(before)
        assert agent.stats.snapshot().api_writes == {"success": 1}
        partial = running.samples()[("gputopo_agent_partial_discoveries_total", ())]
        assert partial >= 4  # the two NVML errors, and at least two discoveries without /sys
