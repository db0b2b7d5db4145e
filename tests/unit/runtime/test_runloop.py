"""The long-running agent: triggers, rate limits, probes, flags and their environment twins."""

from __future__ import annotations

import argparse
import json
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

from gputopo.agent.discovery import Discoverer
from gputopo.agent.metrics import SnapshotHolder
from gputopo.agent.runloop import (
    Agent,
    JsonFormatter,
    RunLoopConfig,
    add_arguments,
    env_name,
    is_gpu_pci_event,
    parse_address,
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


def test_flags_default_to_their_environment_twins(monkeypatch: pytest.MonkeyPatch) -> None:
    assert env_name("--metrics-address") == "GPUTOPO_METRICS_ADDRESS"
    monkeypatch.setenv("GPUTOPO_METRICS_ADDRESS", "127.0.0.1:9999")
    monkeypatch.setenv("GPUTOPO_HEALTH_INTERVAL", "2.5")
    monkeypatch.setenv("GPUTOPO_NO_UDEV", "true")
    monkeypatch.setenv("GPUTOPO_POD_RESOURCES_SOCKET", "")
    monkeypatch.setenv("GPUTOPO_POD_RESOURCES_INTERVAL", "30")
    monkeypatch.setenv("GPUTOPO_XID_WINDOW", "0")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    assert args.pod_resources_interval == 30.0
    assert args.xid_window == 0.0
    assert args.metrics_address == "127.0.0.1:9999"
    assert args.health_interval == 2.5
    assert args.no_udev is True
    assert args.pod_resources_socket == "/var/lib/kubelet/pod-resources/kubelet.sock"
    assert parser.parse_args(["--health-interval", "4"]).health_interval == 4.0  # flag wins


def test_bad_environment_value_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUTOPO_JITTER", "lots")
    with pytest.raises(SystemExit, match=r"GPUTOPO_JITTER='lots': expected float"):
        add_arguments(argparse.ArgumentParser())


def test_metrics_address_forms() -> None:
    assert parse_address("0.0.0.0:9465") == ("0.0.0.0", 9465)
    assert parse_address(":9465") == ("0.0.0.0", 9465)
    assert parse_address("[::1]:9465") == ("::1", 9465)
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        parse_address("9465")


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="--jitter"):
        RunLoopConfig(jitter=0.9)
    with pytest.raises(ValueError, match="--interval"):
        RunLoopConfig(interval_s=0)
    with pytest.raises(ValueError, match="--pod-resources-interval 0"):
        RunLoopConfig(pod_resources_interval_s=0)


def test_pod_resources_poll_defaults_to_every_ten_seconds() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args([]).pod_resources_interval == 10.0
    assert RunLoopConfig().pod_resources_interval_s == 10.0


def test_json_log_lines() -> None:
    record = logging.LogRecord(
        "gputopo.agent.x", logging.WARNING, __file__, 1, "GPU %d lost", (3,), None
    )
    document = json.loads(JsonFormatter().format(record))
    assert document["level"] == "warning"
    assert document["logger"] == "gputopo.agent.x"
    assert document["msg"] == "GPU 3 lost"
    assert document["ts"].endswith("Z")


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
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--no-udev", "--log-format", "text", "--pod-resources-socket", ""])
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
        with pytest.raises(SystemExit, match=r"^gputopo-agent run: --xid-window -5.0: must be"):
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


def test_every_run_option_has_an_environment_twin(monkeypatch: pytest.MonkeyPatch) -> None:
    from gputopo.agent.cli import build_parser

    monkeypatch.setenv("GPUTOPO_INTERVAL", "30")
    monkeypatch.setenv("GPUTOPO_MIG_STRATEGY", "mixed")
    monkeypatch.setenv("GPUTOPO_DRY_RUN", "true")
    monkeypatch.setenv("GPUTOPO_PUBLISH_NRT", "yes")
    monkeypatch.setenv("GPUTOPO_MOCK", "dgx-h100")
    args = build_parser().parse_args(["run"])
    assert args.interval == 30.0
    assert args.mig_strategy == "mixed"
    assert args.dry_run is True
    assert args.publish_nrt is True
    assert args.mock == "dgx-h100"
    assert build_parser().parse_args(["run", "--mig-strategy", "single"]).mig_strategy == "single"

    run_parser = next(
        action.choices["run"]
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    for action in run_parser._actions:
        if action.option_strings and not isinstance(action, argparse._HelpAction):
            assert env_name(max(action.option_strings, key=len)) in (action.help or "")


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("GPUTOPO_MIG_STRATEGY", "weird", "expected one of none, single, mixed"),
        ("GPUTOPO_DRY_RUN", "maybe", "expected true or false"),
        ("GPUTOPO_INTERVAL", "soon", "expected float"),
    ],
)
def test_bad_run_option_twin_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    from gputopo.agent.cli import build_parser

    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit, match=f"{variable}='{value}': {expected}"):
        build_parser()
