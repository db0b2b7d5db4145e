"""Load tracker semantics without Prometheus: validation, unknown = neutral, anti-herd estimates.

Snapshots are set directly (what one successful read produces); the Prometheus reads themselves
are tested against the real server in tests/integration/test_load_aware.py.
"""

from __future__ import annotations

import socket

import numpy as np
import pytest

from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.framework import schedule_one
from gputopo.scheduler.model import parse_pod
from gputopo.scheduler.plugins.load_aware import keep_topology_order
from gputopo.scheduler.prometheus_load import LoadConfig, LoadSnapshot, LoadTracker
from gputopo.scheduler.snapshot import ClusterSnapshot
from tests.unit.scheduler.topo_builders import NVSWITCH_8, PCIE_4, gpu_node, gpu_pod


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def tracker(clock: Clock, **overrides: object) -> LoadTracker:
    settings: dict[str, object] = {"url": "http://127.0.0.1:9", "max_age_s": 60.0, "window_s": 30}
    settings.update(overrides)
    return LoadTracker(LoadConfig(**settings), wall_clock=clock)  # type: ignore[arg-type]


def read(clock: Clock, utilization: dict[str, float], cpu: float = 0.1) -> LoadSnapshot:
    return LoadSnapshot(
        fetched_at=clock.now,
        node_cpu=dict.fromkeys(utilization, cpu),
        gpu_utilization={(n, g): u for n, u in utilization.items() for g in range(8)},
        gpu_memory={(n, g): u for n, u in utilization.items() for g in range(8)},
        sample_time=dict.fromkeys(utilization, clock.now),
    )


def cluster(*names: str) -> ClusterSnapshot:
    snapshot = ClusterSnapshot()
    for name in names:
        snapshot.add_node(gpu_node(name, NVSWITCH_8))
    return snapshot


def test_config_rejects_bad_url_and_thresholds() -> None:
    with pytest.raises(SchedulerInputError, match="--prometheus-url 'localhost:9090'"):
        LoadConfig(url="localhost:9090")
    with pytest.raises(SchedulerInputError, match="--load-threshold gpu_temp"):
        LoadConfig(url="http://p:9090", thresholds={"gpu_temp": 0.5})
    with pytest.raises(SchedulerInputError, match=r"expected a ratio in \(0, 1\]"):
        LoadConfig(url="http://p:9090", thresholds={"node_cpu": 1.5})


def test_queries_get_the_window_substituted() -> None:
    config = LoadConfig(url="http://p:9090", window_s=90)
    assert "[90s]" in config.promql("gpu_utilization")
    assert "gputopo_node_info" in config.promql("node_cpu")


def test_less_loaded_node_scores_higher() -> None:
    clock = Clock()
    load = tracker(clock)
    load.snapshot = read(clock, {"a": 0.9, "b": 0.1})
    snapshot = cluster("a", "b")
    snapshot.attach(load)
    result = schedule_one(parse_pod(gpu_pod("p", 2)), snapshot)
    assert result.node == "b"
    scores = result.diagnosis()
    assert scores["b"].plugin_scores["LoadAware"] > scores["a"].plugin_scores["LoadAware"]


def test_missing_metrics_are_neutral_not_excluded() -> None:
    clock = Clock()
    load = tracker(clock, thresholds={"gpu_utilization": 0.5})
    load.snapshot = read(clock, {"a": 0.8, "b": 0.2})
    snapshot = cluster("a", "b", "c")
    snapshot.attach(load)
    result = schedule_one(parse_pod(gpu_pod("p", 1)), snapshot)
    scores = result.diagnosis()
    assert not scores["a"].feasible  # over the threshold
    assert scores["c"].feasible  # unknown passes the filter
    # Unknown scores the mean of the known feasible nodes (only b here).
    assert scores["c"].plugin_scores["LoadAware"] == scores["b"].plugin_scores["LoadAware"]


def test_old_metrics_become_unknown() -> None:
    clock = Clock()
    load = tracker(clock, thresholds={"gpu_utilization": 0.5})
    load.snapshot = read(clock, {"a": 0.9, "b": 0.9})
    snapshot = cluster("a", "b")
    snapshot.attach(load)
    assert schedule_one(parse_pod(gpu_pod("p", 1)), snapshot).node is None
    clock.now += 61
    result = schedule_one(parse_pod(gpu_pod("p", 1)), snapshot)
    assert result.node is not None
    assert "LoadAware" not in result.diagnosis()[result.node].plugin_scores


def test_bound_pod_counts_until_samples_postdate_it() -> None:
    clock = Clock()
    load = tracker(clock, bound_cpu=0.5, settle_s=10.0)
    load.snapshot = read(clock, {"a": 0.0})
    load.note_bound("a", (0, 1))
    node = load.node_load("a")
    assert node is not None and node.cpu == pytest.approx(0.6)
    assert node.gpu_utilization[0] == pytest.approx(0.8) and node.gpu_utilization[2] == 0.0
    clock.now += 5
    load.snapshot = read(clock, {"a": 0.0})
    load._expire_bound(load.snapshot)
    node = load.node_load("a")
    assert node is not None and node.cpu == pytest.approx(0.6)  # samples not yet past settle
    clock.now += 6
    load.snapshot = read(clock, {"a": 0.0})
    load._expire_bound(load.snapshot)
    node = load.node_load("a")
    assert node is not None and node.cpu == pytest.approx(0.1)


def test_refresh_against_a_closed_port_fails_fast_and_keeps_scheduling() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    clock = Clock()
    load = tracker(clock, url=f"http://127.0.0.1:{port}", timeout_s=0.5)
    assert load.refresh_once() is False
    assert load.failures == 1 and "127.0.0.1" in (load.last_error or "")
    snapshot = cluster("a")
    snapshot.attach(load)
    assert schedule_one(parse_pod(gpu_pod("p", 1)), snapshot).node == "a"


def test_load_never_buys_a_worse_gpu_topology() -> None:
    """An aligned quad on busy GPUs beats a PCIe-only machine on idle ones: load chooses among
    equally aligned placements (a threshold is how busy GPUs are ruled out)."""
    clock = Clock()
    load = tracker(clock)
    load.snapshot = read(clock, {"busy-dgx": 0.95, "idle-pcie": 0.0})
    snapshot = ClusterSnapshot()
    snapshot.add_node(gpu_node("busy-dgx", NVSWITCH_8))
    snapshot.add_node(gpu_node("idle-pcie", PCIE_4, gpus=4))
    snapshot.attach(load)
    result = schedule_one(parse_pod(gpu_pod("p", 4)), snapshot)
    assert result.node == "busy-dgx"
    scores = result.diagnosis()
    assert (
        scores["idle-pcie"].plugin_scores["LoadAware"]
        <= scores["busy-dgx"].plugin_scores["LoadAware"]
    )
    # The same pod on two equally aligned machines goes to the idle one.
    snapshot.add_node(gpu_node("idle-dgx", NVSWITCH_8))
    load.snapshot = read(clock, {"busy-dgx": 0.95, "idle-pcie": 0.0, "idle-dgx": 0.0})
    assert schedule_one(parse_pod(gpu_pod("p", 4)), snapshot).node == "idle-dgx"
    # With a threshold the busy machine is out, and the unaligned idle one takes the pod.
    load.config = LoadConfig(url="http://127.0.0.1:9", thresholds={"gpu_utilization": 0.8})
    load.snapshot = read(clock, {"busy-dgx": 0.95, "idle-pcie": 0.0})
    snapshot.remove_node("idle-dgx")
    assert schedule_one(parse_pod(gpu_pod("p", 4)), snapshot).node == "idle-pcie"


def test_keep_topology_order_caps_worse_classes_only() -> None:
    load = np.array([10, 90, 80, 100, 50])
    topology = np.array([96, 62, 44, 31, 3])  # aligned, aligned, requested scope, NVLink, spread
    assert keep_topology_order(load, topology).tolist() == [10, 90, 10, 10, 10]
    assert keep_topology_order(load, np.array([70, 70, 70, 70, 70])).tolist() == load.tolist()
