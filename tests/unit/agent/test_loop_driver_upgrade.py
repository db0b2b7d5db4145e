"""The GPU Operator's driver upgrade on a mocked DGX H100: the agent releases NVML while the
node's upgrade state says the driver is being replaced (the fake refuses to unload a driver that
an NVML session holds, as ``rmmod`` does), keeps serving metrics and probes without touching the
Node, and opens NVML again once the upgrade moves on — or, when the driver is another version
than its container's NVML library, exits to be recreated with the new one."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gputopo.agent.discovery import Discoverer
from gputopo.agent.loop import EXIT_RESTART, Agent, RunLoopConfig
from gputopo.agent.metrics import MetricsCollector
from gputopo.agent.publish.writer import Publisher
from gputopo.core.contract import Gfd
from gputopo.core.retry import Backoff
from gputopo.mocks.fake_pynvml import DriverInUse, make_fake_pynvml
from gputopo.mocks.profile import load_profile
from gputopo.mocks.sysfs import build_sysfs
from tests.unit.agent.agent_loop import running
from tests.unit.agent.fake_clock import FakeClock
from tests.unit.agent.publish.test_plan_nvidia_labels import UpdatingApiServer

NEW_DRIVER = "565.57.01"


class UpgradeLabel:
    """The Node's nvidia.com/gpu-driver-upgrade-state as the agent reads it."""

    def __init__(self) -> None:
        self.state: str | None = None
        self.failing = False
        self.reads = 0

    def __call__(self) -> str | None:
        self.reads += 1
        if self.failing:
            raise ConnectionError("apiserver unreachable")
        return self.state


class Node:
    def __init__(self, tmp_path: Path) -> None:
        profile = load_profile("dgx-h100")
        self.sysfs = tmp_path / "sys"
        build_sysfs(profile, self.sysfs)
        self.nvml: Any = make_fake_pynvml(profile)
        self.control = self.nvml.control
        self.api = UpdatingApiServer()
        self.label = UpgradeLabel()
        self.clock = FakeClock()
        self.discoverer = Discoverer(self.nvml, self.sysfs, "dgx-a")
        self.agent = self.new_agent(self.discoverer)

    def new_agent(self, discoverer: Discoverer) -> Agent:
        """The agent's process on this machine and Node (the container started anew)."""
        return Agent(
            discoverer,
            publisher=Publisher(self.api, "n1", backoff=Backoff(max_attempts=1)),
            config=RunLoopConfig(interval_s=3600, upgrade_poll_interval_s=10, event_wait_s=0.05),
            udev_monitor_factory=None,
            clock=self.clock,
            upgrade_state=self.label,
        )

    def writes(self) -> int:
        return sum(self.api.patches.values())

    def metric(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        collector = MetricsCollector(self.agent.holder, self.agent.stats)
        return {
            tuple(sorted(sample.labels.items())): sample.value
            for family in collector.collect()
            for sample in family.samples
            if sample.name == name
        }


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    machine = Node(tmp_path)
    machine.discoverer.open()
    yield machine
    machine.discoverer.close()


def test_nvml_is_released_for_the_driver_swap_and_reopened_after_dgx_h100(node: Node) -> None:
    agent, control = node.agent, node.control
    assert agent.run_cycle().node.status == "written"
    labels = node.api.document["metadata"]["labels"]
    assert labels[Gfd.CUDA_DRIVER_VERSION_FULL] == "550.54.15"
    with pytest.raises(DriverInUse, match="module nvidia is in use"):
        control.unload_driver()  # what the operator's new driver pod meets without the release

    node.label.state = "drain-required"
    agent.check_driver_upgrade()
    assert agent.released_for == "drain-required"
    assert not control.initialized
    control.unload_driver()  # nothing holds it now
    writes, calls = node.writes(), sum(control.calls.values())
    node.label.state = "pod-restart-required"
    for _ in range(3):
        node.clock.advance(10)
        agent.health_tick()  # no samples: NVML is not called
        assert agent.run_cycle().node.status == "skipped"
    assert sum(control.calls.values()) == calls
    assert node.writes() == writes  # the Node is kept as it is: no stale health taints
    assert agent.readiness() == (
        True,
        "driver upgrade in progress (pod-restart-required): NVML released",
    )
    assert agent.liveness()[0]
    assert node.metric("gputopo_agent_driver_upgrade_in_progress") == {
        (("state", "pod-restart-required"),): 1.0
    }
    assert agent.holder.get().load is None  # no stale per-second samples on /metrics

    control.load_driver()  # the driver pod restarted with the same version
    node.label.state = "validation-required"  # the driver runs; the validator checks it
    node.clock.advance(10)
    agent.health_tick()
    assert agent.released_for is None
    assert control.initialized
    assert agent.run_cycle().node.status in ("written", "unchanged")
    assert labels[Gfd.CUDA_DRIVER_VERSION_FULL] == "550.54.15"
    assert node.metric("gputopo_agent_driver_upgrade_in_progress") == {(("state", ""),): 0.0}
    assert not agent.stopping


def test_another_driver_version_makes_the_agent_exit_to_be_recreated_dgx_h100(
    node: Node, tmp_path: Path
) -> None:
    """The container's libnvidia-ml is the old driver's: NVML answers "Driver/library version
    mismatch" until the container is recreated. The agent exits (status 3) without touching the
    Node; the kubelet's new container publishes the new driver."""
    agent, control = node.agent, node.control
    assert agent.run_cycle().node.status == "written"
    node.label.state = "pod-restart-required"
    agent.check_driver_upgrade(force=True)
    control.unload_driver()
    control.load_driver(NEW_DRIVER)
    writes = node.writes()
    node.label.state = "validation-required"
    agent.check_driver_upgrade(force=True)
    assert agent.stopping and agent.exit_status == EXIT_RESTART == 3
    assert node.writes() == writes
    assert not control.initialized

    control.mount_library()  # the kubelet recreated the container: the new driver's library
    with Discoverer(node.nvml, node.sysfs, "dgx-a") as discoverer:
        restarted = node.new_agent(discoverer)
        restarted.check_driver_upgrade(force=True)
        assert restarted.released_for is None
        assert restarted.run_cycle().node.status == "written"
    labels = node.api.document["metadata"]["labels"]
    assert labels[Gfd.CUDA_DRIVER_VERSION_FULL] == NEW_DRIVER


@pytest.mark.parametrize(
    "state",
    ["upgrade-required", "cordon-required", "wait-for-jobs-required", "uncordon-required", None],
)
def test_nvml_stays_open_while_the_driver_is_not_being_replaced(node: Node, state: Any) -> None:
    node.label.state = state
    node.agent.check_driver_upgrade(force=True)
    assert node.agent.released_for is None and node.control.initialized


def test_an_unreadable_state_changes_nothing(node: Node) -> None:
    node.label.state = "pod-restart-required"
    node.agent.check_driver_upgrade(force=True)
    node.label.failing = True
    node.agent.check_driver_upgrade(force=True)
    assert node.agent.released_for == "pod-restart-required"  # not reopened on an API error
    node.label.failing = False
    node.label.state = "upgrade-done"
    node.agent.check_driver_upgrade(force=True)
    assert node.agent.released_for is None


def test_the_state_is_read_every_poll_interval_not_every_tick(node: Node) -> None:
    for _ in range(25):
        node.agent.health_tick()
        node.clock.advance(1)
    assert node.label.reads == 3  # at 0, 10 and 20 s


def test_opening_is_retried_until_the_new_driver_loads(node: Node) -> None:
    agent, control = node.agent, node.control
    agent.run_cycle()
    node.label.state = "pod-restart-required"
    agent.check_driver_upgrade(force=True)
    control.unload_driver()
    node.label.state = "upgrade-done"  # the label moved on before the driver finished loading
    agent.check_driver_upgrade(force=True)
    assert agent.released_for is None and not control.initialized
    writes = node.writes()
    result = agent.run_cycle()
    assert result.node.status == "skipped"  # NVML down with GPUs on the PCI bus: nothing said
    assert node.writes() == writes
    control.load_driver()
    assert agent.run_cycle().node.status in ("written", "unchanged")
    assert control.initialized
    assert not agent.stopping


def test_the_running_agent_stops_its_event_thread_before_it_shuts_nvml_down(node: Node) -> None:
    """The event thread sleeps inside NVML's event wait: it is stopped and joined first, and a
    new one starts when NVML opens again. Started mid-upgrade, the agent releases at once."""
    agent, control = node.agent, node.control
    node.label.state = "pod-restart-required"
    with running(agent, node.clock, threads=2):  # main and health park on the clock
        assert agent.released_for == "pod-restart-required"
        assert not control.initialized
        assert not _events_threads()
        assert agent.run_cycle().node.status == "skipped"
        node.label.state = "upgrade-done"
        node.clock.tick(10, threads=2)
        assert agent.released_for is None and control.initialized
        assert len(_events_threads()) == 1
        node.label.state = "drain-required"
        node.clock.tick(10, threads=2)
        assert agent.released_for == "drain-required"
        assert not control.initialized
        assert not _events_threads()
        assert control.calls["nvmlEventSetFree"] == 2  # each release gave the event set back
        assert agent.liveness()[0], agent.liveness()


def _events_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "gputopo-events" and t.is_alive()]


def test_a_gpu_failed_before_the_upgrade_is_judged_anew_with_the_new_driver(node: Node) -> None:
    """XID 79 needs a GPU reset; the driver reload is one. Until the new driver's discoveries,
    the health taint stays (the Node is not touched while NVML is released); then it goes, after
    the usual removal hysteresis."""
    agent, control = node.agent, node.control
    control.inject_xid(4, 79)
    assert agent.run_cycle().node.status == "written"
    assert _health_taints(node) == ["failed"]
    node.label.state = "pod-restart-required"
    agent.check_driver_upgrade(force=True)
    assert _health_taints(node) == ["failed"]  # kept while the driver is out
    control.unload_driver()
    control.load_driver()
    node.label.state = "upgrade-done"
    agent.check_driver_upgrade(force=True)
    for _ in range(3):
        agent.run_cycle()
    assert _health_taints(node) == []
    assert node.metric("gputopo_gpu_xid_errors_total")  # the counter did not go away


def _health_taints(node: Node) -> list[str]:
    taints = node.api.document["spec"].get("taints") or []
    return [t["value"] for t in taints if t["key"] == "gputopo.io/gpu-health"]
