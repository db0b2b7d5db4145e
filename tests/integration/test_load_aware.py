"""Load-aware placement over a real Prometheus scraping two real agents' /metrics on loopback.

Each node is the agent as in production (``agent.loop.Agent`` and its metrics server) on a
mocked DGX H100 — the fake ``pynvml`` from ``mocks/`` whose utilisation the tests script through
``control.set_utilization`` — with a fake kubelet for pod-resources. Prometheus is the real
server scraping both every second; the scheduler's `LoadTracker` reads it with PromQL.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from gputopo.agent.discovery import Discoverer
from gputopo.agent.loop import Agent, RunLoopConfig
from gputopo.agent.podresources import PodResourcesClient
from gputopo.agent.runloop import serve
from gputopo.scheduler.framework import schedule_one
from gputopo.scheduler.model import parse_pod
from gputopo.scheduler.prometheus_load import LoadConfig, LoadTracker
from gputopo.scheduler.runtime.core_adapter import CoreFramework
from gputopo.scheduler.snapshot import ClusterSnapshot
from tests.conftest import StartPrometheus
from tests.controlplane import ControlPlane, ManagedProcess, PrometheusServer, free_port
from tests.controlplane.kubeconfig import write_kubeconfig
from tests.integration.scheduler_env import (
    REPO,
    SCHEDULER_NAMESPACE,
    SERVICE_ACCOUNT,
    Cluster,
    scheduler_rbac,
)
from tests.integration.scheduler_env import gpu_node as env_gpu_node
from tests.polling import eventually
from tests.unit.agent.fake_kubelet import fake_kubelet, short_socket_dir

pytestmark = pytest.mark.integration

PROFILE = "dgx-h100"
NODES = ("node-busy", "node-idle")


class MockedNode:
    def __init__(self, name: str, sysfs_root: Path) -> None:
        from gputopo.mocks.fake_pynvml import make_fake_pynvml
        from gputopo.mocks.profile import load_profile
        from gputopo.mocks.sysfs import build_sysfs

        self.name = name
        self.profile = load_profile(PROFILE)
        self.nvml = make_fake_pynvml(self.profile)
        build_sysfs(self.profile, sysfs_root)
        self.sysfs_root = sysfs_root
        self.control: Any = self.nvml.control

    def set_all(self, percent: int) -> None:
        for gpu in range(8):
            self.control.set_utilization(gpu, gpu=percent, memory=percent)


@contextmanager
def running_agent(node: MockedNode) -> Iterator[str]:
    config = RunLoopConfig(
        interval_s=3600,
        health_interval_s=0.2,
        pod_resources_interval_s=0.5,
        min_trigger_interval_s=0,
        udev=False,
    )
    with short_socket_dir() as directory:
        socket_path = os.path.join(directory, "kubelet.sock")
        with (
            fake_kubelet(socket_path),
            Discoverer(node.nvml, node.sysfs_root, node.name) as discoverer,
        ):
            agent = Agent(
                discoverer,
                publisher=None,
                pod_resources=PodResourcesClient(socket_path),
                config=config,
            )
            server = serve(agent, "127.0.0.1:0", registry_version="test")
            thread = threading.Thread(target=agent.run, daemon=True)
            thread.start()
            try:
                yield f"127.0.0.1:{server.port}"
            finally:
                agent.stop()
                thread.join(timeout=10)
                server.stop()


@pytest.fixture
def nodes(tmp_path: Path) -> dict[str, MockedNode]:
    return {name: MockedNode(name, tmp_path / name / "sys") for name in NODES}


@pytest.fixture
def prometheus(
    start_prometheus: StartPrometheus, nodes: dict[str, MockedNode]
) -> Iterator[PrometheusServer]:
    with ExitStack() as stack:
        targets = [stack.enter_context(running_agent(node)) for node in nodes.values()]
        server = start_prometheus({"gputopo-agent": targets}, scrape_interval="1s")
        server.wait_for("count(gputopo_node_info) == 2", timeout=30)
        yield server


def tracker_for(prometheus: PrometheusServer, **overrides: Any) -> LoadTracker:
    settings: dict[str, Any] = {
        "url": prometheus.url,
        "window_s": 2.0,
        "timeout_s": 2.0,
        "refresh_interval_s": 0.5,
        "max_age_s": 30.0,
    }
    settings.update(overrides)
    return LoadTracker(LoadConfig(**settings))


def gpu_node(name: str) -> dict[str, Any]:
    return {
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "gputopo.io/gpu.nvlink-domain-size": "8",
                "gputopo.io/gpu.numa-max": "4",
            },
        },
        "spec": {},
        "status": {
            "allocatable": {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": "8"}
        },
    }


def gpu_pod(name: str, gpus: int = 1) -> dict[str, Any]:
    requests = {"cpu": "1", "nvidia.com/gpu": str(gpus)}
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "m", "image": "x", "resources": {"requests": requests}}]},
    }


def wait_until_loaded(tracker: LoadTracker, node: str, above: float, timeout: float = 30) -> None:
    """Refresh until Prometheus' window shows `node`'s GPUs busier than `above`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tracker.refresh_once()
        load = tracker.node_load(node)
        mean = load.gpu_mean("gpu_utilization") if load else None
        if mean is not None and mean > above:
            return
        time.sleep(0.5)
    pytest.fail(f"{node}: GPU utilisation never rose above {above} ({tracker.last_error})")


def snapshot_with_nodes() -> ClusterSnapshot:
    snapshot = ClusterSnapshot()
    for name in NODES:
        snapshot.add_node(gpu_node(name))
    return snapshot


def test_gpu_pod_goes_to_the_node_whose_gpus_are_idle(
    nodes: dict[str, MockedNode], prometheus: PrometheusServer
) -> None:
    nodes["node-busy"].set_all(95)
    nodes["node-idle"].set_all(5)
    tracker = tracker_for(prometheus)
    wait_until_loaded(tracker, "node-busy", 0.9)
    snapshot = snapshot_with_nodes()
    snapshot.attach(tracker)
    results = [schedule_one(parse_pod(gpu_pod(f"p{i}")), snapshot) for i in range(6)]
    assert {r.node for r in results} == {"node-idle"}
    scores = results[0].diagnosis()
    assert (
        scores["node-idle"].plugin_scores["LoadAware"]
        > scores["node-busy"].plugin_scores["LoadAware"]
    )


def test_threshold_filter_refuses_the_overloaded_node_with_a_reason(
    nodes: dict[str, MockedNode], prometheus: PrometheusServer
) -> None:
    nodes["node-busy"].set_all(95)
    nodes["node-idle"].set_all(95)
    tracker = tracker_for(prometheus, thresholds={"gpu_utilization": 0.8})
    wait_until_loaded(tracker, "node-busy", 0.9)
    wait_until_loaded(tracker, "node-idle", 0.9)
    snapshot = snapshot_with_nodes()
    snapshot.attach(tracker)
    result = schedule_one(parse_pod(gpu_pod("p")), snapshot)
    assert result.node is None
    assert result.message == (
        "0/2 nodes are available: 2 node(s) had GPU utilization above the threshold."
    )
    # Load drops on one node: once Prometheus' window shows it, that node passes again.
    nodes["node-idle"].set_all(0)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        tracker.refresh_once()
        result = schedule_one(parse_pod(gpu_pod("p")), snapshot)
        if result.node is not None:
            break
        time.sleep(0.5)
    assert result.node == "node-idle"


def cpu_pod(name: str) -> dict[str, Any]:
    requests = {"cpu": "1"}
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "m", "image": "x", "resources": {"requests": requests}}]},
    }


def test_bound_pods_count_until_metrics_show_them(prometheus: PrometheusServer) -> None:
    tracker = tracker_for(prometheus, window_s=2.0, settle_s=1.0, bound_cpu=0.5)
    wait_until_loaded(tracker, "node-idle", -1.0)
    wait_until_loaded(tracker, "node-busy", -1.0)
    framework = CoreFramework(load=tracker)
    for name in NODES:
        framework.upsert_node(gpu_node(name))
    framework.assume(cpu_pod("first"), "node-busy")
    # The bind counts on node-busy before any scrape could show it: its CPU as the scheduler
    # sees it is Prometheus' value plus the estimate, and LoadAware scores exactly that.
    snapshot = tracker.snapshot
    assert snapshot is not None
    measured = snapshot.node_cpu["node-busy"]
    seen = tracker.node_load("node-busy")
    assert seen is not None and seen.cpu == pytest.approx(min(1.0, measured + 0.5))
    assert tracker.node_load("node-idle").cpu == snapshot.node_cpu["node-idle"]  # type: ignore[union-attr]
    result = schedule_one(parse_pod(cpu_pod("second")), framework.snapshot, framework.profile)
    busy = result.diagnosis()["node-busy"].plugin_scores["LoadAware"]
    assert busy == int(100 * (1 - min(1.0, measured + 0.5)))
    # Once Prometheus has samples newer than the bind plus settle_s, the estimate is dropped.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        tracker.refresh_once()
        snapshot = tracker.snapshot
        seen = tracker.node_load("node-busy")
        if snapshot is not None and seen is not None and seen.cpu == snapshot.node_cpu["node-busy"]:
            break
        time.sleep(0.5)
    else:
        pytest.fail("the bind estimate never expired")


def test_scheduling_goes_on_with_prometheus_down(prometheus: PrometheusServer) -> None:
    tracker = tracker_for(prometheus, timeout_s=0.5, max_age_s=2.0)
    wait_until_loaded(tracker, "node-idle", -1.0)
    snapshot = snapshot_with_nodes()
    snapshot.attach(tracker)
    prometheus.stop()
    assert tracker.refresh_once() is False
    assert tracker.last_error is not None
    # The last good read is still used while young; once older than max_age, load is unknown
    # and neutral: no LoadAware score, and the pod is placed all the same.
    deadline = time.monotonic() + 10
    while tracker.fresh() is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    result = schedule_one(parse_pod(gpu_pod("p")), snapshot)
    assert result.node in NODES
    assert "LoadAware" not in result.diagnosis()[result.node].plugin_scores


def test_background_refresh_never_blocks_scheduling(prometheus: PrometheusServer) -> None:
    tracker = tracker_for(prometheus)
    tracker.start()
    try:
        deadline = time.monotonic() + 30
        while tracker.refreshes < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert tracker.refreshes >= 2
        assert set(tracker.snapshot.node_cpu if tracker.snapshot else {}) == set(NODES)
    finally:
        tracker.stop()


def _post(port: int, verb: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/{verb}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def test_extender_process_with_prometheus_flags_filters_and_ranks_by_load(
    nodes: dict[str, MockedNode],
    prometheus: PrometheusServer,
    control_plane: ControlPlane,
    cluster: Cluster,
    tmp_path: Path,
) -> None:
    nodes["node-busy"].set_all(95)
    nodes["node-idle"].set_all(5)
    wait_until_loaded(tracker_for(prometheus), "node-busy", 0.9)
    for name in NODES:
        cluster.create_node(env_gpu_node(name, 8, labels=gpu_node(name)["metadata"]["labels"]))
    port = free_port()
    with scheduler_rbac(control_plane):
        token = control_plane.service_account_token(SCHEDULER_NAMESPACE, SERVICE_ACCOUNT)
        kubeconfig = tmp_path / "extender.kubeconfig"
        assert control_plane.pki is not None
        write_kubeconfig(kubeconfig, control_plane.url, control_plane.pki.ca_file, token=token)
        extender = ManagedProcess(
            "gputopo-extender-load",
            [
                sys.executable,
                "-m",
                "gputopo.scheduler.cli",
                "extender",
                f"--listen=127.0.0.1:{port}",
                "--insecure-no-auth",
                f"--kubeconfig={kubeconfig}",
                f"--prometheus-url={prometheus.url}",
                "--load-window=2",
                "--load-refresh-interval=0.5",
                "--load-timeout=2",
                "--load-threshold=gpu_utilization=0.9",
            ],
            tmp_path / "extender.log",
            REPO,
        )
        try:
            extender.wait_until(
                lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz").read() == b"ok\n",
                30,
                "ready (/readyz)",
            )
            args = {"Pod": gpu_pod("job"), "NodeNames": list(NODES)}
            answer = eventually(
                lambda: (reply := _post(port, "filter", args))["FailedNodes"] and reply,
                30,
                "the extender's filter to see node-busy's load",
            )
            assert answer["NodeNames"] == ["node-idle"]
            assert answer["FailedNodes"] == {
                "node-busy": "node(s) had GPU utilization above the threshold"
            }
            assert _post(port, "prioritize", args) == [
                {"Host": "node-busy", "Score": 0},
                {"Host": "node-idle", "Score": 10},
            ]
        finally:
            extender.stop()
    log = (tmp_path / "extender.log").read_text()
    assert "Traceback" not in log, log
