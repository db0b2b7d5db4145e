"""The long-running agent: triggers, rate limits, probes, flags and their environment twins."""

from __future__ import annotations

import argparse
import logging
import os
import queue
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from gputopo.agent.cli import build_parser
from gputopo.agent.discovery import Discoverer
from gputopo.agent.metrics import SnapshotHolder
from gputopo.agent.runloop import (
    Agent,
    RunLoopConfig,
    is_gpu_pci_event,
    serve,
    signal_handlers,
)
from gputopo.agent.topology import NodeTopology


class _NoNvml:
    """An NVML whose library is missing: a node without GPUs or drivers."""

    class NVMLError(Exception):
        value = 9  # NVML_ERROR_DRIVER_NOT_LOADED

    def nvmlInit(self) -> None:
        raise self.NVMLError("Driver Not Loaded")


class _CountingDiscoverer(Discoverer):
    def __init__(self, root: str) -> None:
        super().__init__(_NoNvml(), sysfs_root=root, hostname="node-a")
        self.discoveries = 0

    def discover(self) -> NodeTopology:
        self.discoveries += 1
        return super().discover()


class _FakeUdev:
    """Stands in for a pyudev kernel monitor: poll() hands out queued devices."""

    def __init__(self) -> None:
        self.events: queue.Queue[Any] = queue.Queue()

    def poll(self, timeout: float | None = None) -> Any:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None


class _Device:
    def __init__(self, action: str, pci_id: str, slot: str = "0000:18:00.0") -> None:
        self.action = action
        self.properties = {"PCI_ID": pci_id, "PCI_SLOT_NAME": slot, "SUBSYSTEM": "pci"}


@pytest.fixture
def discoverer(tmp_path: Any) -> Iterator[_CountingDiscoverer]:
    with _CountingDiscoverer(str(tmp_path)) as opened:
        yield opened


def _running(agent: Agent) -> threading.Thread:
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    return thread


def _wait(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_nvidia_pci_add_remove_bind_unbind_trigger_rediscovery() -> None:
    for action in ("add", "remove", "bind", "unbind"):
        assert is_gpu_pci_event(action, {"PCI_ID": "10DE:2330"})
    assert not is_gpu_pci_event("change", {"PCI_ID": "10DE:2330"})
    assert not is_gpu_pci_event("add", {"PCI_ID": "15B3:1021"})  # a Mellanox NIC
    assert not is_gpu_pci_event("add", {})


def test_udev_event_for_a_gpu_runs_a_cycle_at_once(discoverer: _CountingDiscoverer) -> None:
    udev = _FakeUdev()
    config = RunLoopConfig(interval_s=3600, min_trigger_interval_s=0, health_interval_s=0.05)
    agent = Agent(discoverer, publisher=None, config=config, udev_monitor_factory=lambda: udev)
    thread = _running(agent)
    _wait(lambda: agent.cycles == 1)
    udev.events.put(_Device("add", "15B3:1021"))  # not a GPU: ignored
    udev.events.put(_Device("unbind", "10DE:2330"))
    _wait(lambda: agent.cycles == 2)
    time.sleep(0.3)
    assert agent.cycles == 2
    agent.stop()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_triggers_inside_the_minimum_interval_are_coalesced(
    discoverer: _CountingDiscoverer,
) -> None:
    config = RunLoopConfig(interval_s=3600, min_trigger_interval_s=0.5, udev=False)
    agent = Agent(discoverer, publisher=None, config=config)
    thread = _running(agent)
    _wait(lambda: agent.cycles == 1)
    started = time.monotonic()
    for _ in range(20):
        agent.trigger("XID")
    _wait(lambda: agent.cycles == 2)
    assert time.monotonic() - started >= 0.3  # held back until the minimum interval passed
    time.sleep(0.7)
    assert agent.cycles == 2  # twenty triggers, one cycle
    agent.stop()
    thread.join(timeout=10)


def test_scheduled_rediscovery_with_jitter(discoverer: _CountingDiscoverer) -> None:
    config = RunLoopConfig(interval_s=0.2, jitter=0.5, udev=False)
    agent = Agent(discoverer, publisher=None, config=config)
    delays = [agent.next_delay() for _ in range(200)]
    assert min(delays) >= 0.1 and max(delays) <= 0.3 and len(set(delays)) > 100
    thread = _running(agent)
    _wait(lambda: agent.cycles >= 3, timeout=5)
    agent.stop()
    thread.join(timeout=10)


def test_health_tick_keeps_the_metrics_snapshot_fresh(discoverer: _CountingDiscoverer) -> None:
    holder = SnapshotHolder()
    config = RunLoopConfig(interval_s=3600, health_interval_s=0.05, udev=False)
    agent = Agent(discoverer, publisher=None, config=config, holder=holder)
    thread = _running(agent)
    _wait(lambda: holder.get().load is not None)
    first = holder.get().load
    assert first is not None
    _wait(lambda: (holder.get().load or first).timestamp > first.timestamp)
    snapshot = holder.get()
    assert snapshot.topology is not None and not snapshot.topology.nvml.available
    assert snapshot.pod_resources is not None and not snapshot.pod_resources.available
    agent.stop()
    thread.join(timeout=10)


def test_probes_over_http(discoverer: _CountingDiscoverer) -> None:
    config = RunLoopConfig(interval_s=3600, health_interval_s=0.05, udev=False)
    agent = Agent(discoverer, publisher=None, config=config)
    server = serve(agent, "127.0.0.1:0", registry_version="test")
    try:
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(server.url + "/readyz", timeout=5)
        assert not_ready.value.code == 503
        assert b"first discovery" in not_ready.value.read()
        thread = _running(agent)
        _wait(lambda: agent.cycles == 1)
        for path in ("/healthz", "/readyz"):
            with urllib.request.urlopen(server.url + path, timeout=5) as response:
                assert response.status == 200
        with urllib.request.urlopen(server.url + "/metrics", timeout=5) as response:
            body = response.read().decode()
        assert "gputopo_nvml_up 0.0" in body
        assert "gputopo_agent_discoveries_total" in body
        assert "gputopo_podresources_up 0.0" in body
        agent.stop()
        thread.join(timeout=10)
    finally:
        server.stop()


def test_sigterm_stops_and_sighup_rediscovers(discoverer: _CountingDiscoverer) -> None:
    config = RunLoopConfig(interval_s=3600, min_trigger_interval_s=0, udev=False)
    agent = Agent(discoverer, publisher=None, config=config)
    before = signal.getsignal(signal.SIGTERM)
    with signal_handlers(agent):
        thread = _running(agent)
        _wait(lambda: agent.cycles == 1)
        os.kill(os.getpid(), signal.SIGHUP)
        _wait(lambda: agent.cycles == 2)
        os.kill(os.getpid(), signal.SIGTERM)
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert signal.getsignal(signal.SIGTERM) is before  # restored


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="--jitter"):
        RunLoopConfig(jitter=0.9)
    with pytest.raises(ValueError, match="--interval"):
        RunLoopConfig(interval_s=0)
    with pytest.raises(ValueError, match="--pod-resources-interval 0"):
        RunLoopConfig(pod_resources_interval_s=0)


def test_new_gpu_allocation_from_the_kubelet_triggers_a_cycle(
    discoverer: _CountingDiscoverer,
) -> None:
    from gputopo.agent.podresources import PodResourcesClient

    from .fake_kubelet import fake_kubelet, short_socket_dir

    with short_socket_dir() as directory:
        socket_path = os.path.join(directory, "kubelet.sock")
        with fake_kubelet(socket_path) as kubelet, PodResourcesClient(socket_path) as client:
            config = RunLoopConfig(
                interval_s=3600,
                health_interval_s=0.05,
                pod_resources_interval_s=0.1,
                min_trigger_interval_s=0,
                udev=False,
            )
            agent = Agent(discoverer, publisher=None, pod_resources=client, config=config)
            thread = _running(agent)
            _wait(lambda: agent.cycles == 1)
            time.sleep(0.4)
            assert agent.cycles == 1  # unchanged allocations: no extra cycle
            kubelet.allocate("ml", "p", "c", "nvidia.com/gpu", [("GPU-x", 0)])
            _wait(lambda: agent.cycles == 2)
            pods = agent.holder.get().pod_resources
            assert pods is not None and pods.allocations_for("GPU-x")
            agent.stop()
            thread.join(timeout=10)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run_args(**overrides: Any) -> argparse.Namespace:
    args = build_parser().parse_args(
        ["run", "--no-udev", "--log-format", "text", "--pod-resources-socket", ""]
    )
    args.interval = 3600.0
    args.dry_run = False
    for name, value in overrides.items():
        setattr(args, name, value)
    return args


def test_run_agent_serves_until_sigterm(discoverer: _CountingDiscoverer) -> None:
    from gputopo.agent.runloop import run_agent

    port = _free_port()
    answers: list[int] = []

    def probe_then_terminate() -> None:
        _wait(lambda: discoverer.discoveries >= 1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            answers.append(response.status)
        os.kill(os.getpid(), signal.SIGTERM)

    helper = threading.Thread(target=probe_then_terminate, daemon=True)
    helper.start()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        status = run_agent(discoverer, None, _run_args(metrics_address=f"127.0.0.1:{port}"))
    finally:
        root.handlers[:], root.level = handlers, level
    helper.join(timeout=10)
    assert status == 0
    assert answers == [200]


def test_run_agent_negative_xid_window_is_one_line(discoverer: _CountingDiscoverer) -> None:
    from gputopo.agent.runloop import run_agent

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with pytest.raises(SystemExit, match=r"^gputopo-agent: error: --xid-window -5.0: must be"):
            run_agent(discoverer, None, _run_args(xid_window=-5.0))
    finally:
        root.handlers[:], root.level = handlers, level


def test_run_agent_bad_address_is_one_line(discoverer: _CountingDiscoverer) -> None:
    from gputopo.agent.runloop import run_agent

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with pytest.raises(SystemExit, match="--metrics-address 'nowhere'"):
            run_agent(discoverer, None, _run_args(metrics_address="nowhere"))
    finally:
        root.handlers[:], root.level = handlers, level


def test_real_kernel_uevent_monitor_opens_and_polls() -> None:
    from gputopo.agent.runloop import open_udev_monitor

    monitor = open_udev_monitor()
    event = monitor.poll(timeout=0.1)
    assert event is None or getattr(event, "subsystem", None) == "pci"
