"""A transient error publishes no wrong value: a partial discovery (an NVML error on one GPU, an
unreadable /sys) keeps the Node's last good topology values, and a topology-defining value
changes only after as many consecutive complete discoveries as a removal needs.

Machines: the mocked profiles (fake pynvml with per-call fault injection, fake sysfs), the real
Discoverer and Publisher, and an in-memory Node that applies JSON merge patches.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gputopo.agent.discovery import Discoverer
from gputopo.agent.publish.desired import DesiredState
from gputopo.agent.publish.plan import NodeView, plan
from gputopo.agent.publish.writer import Publisher
from gputopo.core.contract import Contract, Gfd
from gputopo.core.retry import Backoff
from gputopo.mocks.fake_pynvml import make_fake_pynvml
from gputopo.mocks.profile import load_profile
from gputopo.mocks.sysfs import build_sysfs

C = Contract()


class MemoryNode:
    """A Node that applies JSON merge patches and counts writes."""

    def __init__(self, name: str) -> None:
        self.document: dict[str, Any] = {
            "metadata": {"name": name, "resourceVersion": "1", "labels": {}, "annotations": {}},
            "spec": {},
        }
        self.writes = 0
        self.history: list[dict[str, str]] = []

    def read_node(self, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.document)

    def patch_node(self, name: str, body: Any, **kwargs: Any) -> Any:
        metadata = self.document["metadata"]
        for part in ("labels", "annotations"):
            for key, value in body.get("metadata", {}).get(part, {}).items():
                if value is None:
                    metadata[part].pop(key, None)
                else:
                    metadata[part][key] = value
        if "spec" in body:
            self.document["spec"]["taints"] = body["spec"]["taints"]
        metadata["resourceVersion"] = str(int(metadata["resourceVersion"]) + 1)
        self.writes += 1
        self.history.append(dict(metadata["labels"]))
        return self.document

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.document["metadata"]["labels"])


class Machine:
    def __init__(self, profile: str, root: Path) -> None:
        self.sysfs = root / "sys"
        spec = load_profile(profile)
        build_sysfs(spec, self.sysfs)
        self.nvml = make_fake_pynvml(spec)
        self.control = self.nvml.control
        self.discoverer = Discoverer(self.nvml, self.sysfs, "node-1")
        self.node = MemoryNode("node-1")
        backoff = Backoff(max_attempts=1, sleep=lambda seconds: None)
        self.publisher = Publisher(self.node, "node-1", backoff=backoff)

    def cycle(self) -> str:
        return self.publisher.publish(self.discoverer.discover()).status


@pytest.fixture
def dgx_h100(tmp_path: Path) -> Iterator[Machine]:
    machine = Machine("dgx-h100", tmp_path)
    machine.discoverer.open()
    try:
        assert machine.cycle() == "written"
        assert machine.cycle() == "unchanged"
        yield machine
    finally:
        machine.discoverer.close()


def test_transient_nvml_error_on_one_gpu_keeps_gpu_count(dgx_h100: Machine) -> None:
    before = dgx_h100.node.labels
    writes = dgx_h100.node.writes
    dgx_h100.control.inject_error("nvmlDeviceGetName", "UNKNOWN", index=2, times=1)
    assert dgx_h100.cycle() == "unchanged"
    assert dgx_h100.cycle() == "unchanged"  # the next, complete discovery finds it the same
    assert dgx_h100.node.labels == before
    assert dgx_h100.node.labels[Gfd.GPU_COUNT] == "8"
    assert dgx_h100.node.writes == writes  # zero wrong writes, zero writes at all
    assert dgx_h100.publisher.counters.partial_discoveries == 1


def test_transient_nvlink_state_error_keeps_nvlink_domain_size(dgx_h100: Machine) -> None:
    writes = dgx_h100.node.writes
    dgx_h100.control.inject_error("nvmlDeviceGetNvLinkState", "UNKNOWN", index=2, times=1)
    for _ in range(3):
        assert dgx_h100.cycle() == "unchanged"
    assert dgx_h100.node.labels[C.gpu_nvlink_domain_size] == "8"
    assert dgx_h100.node.writes == writes


def test_unreadable_sys_keeps_numa_labels(dgx_h100: Machine) -> None:
    before = dgx_h100.node.labels
    writes = dgx_h100.node.writes
    away = dgx_h100.sysfs.with_name("sys-away")
    os.rename(dgx_h100.sysfs, away)  # /sys unreadable for a moment
    try:
        assert dgx_h100.cycle() == "unchanged"
        assert dgx_h100.cycle() == "unchanged"
    finally:
        os.rename(away, dgx_h100.sysfs)
    assert dgx_h100.cycle() == "unchanged"
    assert dgx_h100.node.labels == before
    for key, value in ((C.gpu_numa_max, "4"), (C.gpu_aligned_max, "4"), (C.gpu_rdma, "true")):
        assert dgx_h100.node.labels[key] == value
    assert dgx_h100.node.labels[C.numa_nodes] == "2"
    assert dgx_h100.node.writes == writes
    assert dgx_h100.publisher.counters.partial_discoveries == 2


def test_partial_discovery_still_publishes_the_health_taint(dgx_h100: Machine) -> None:
    dgx_h100.control.set_lost(3)
    dgx_h100.control.inject_error("nvmlDeviceGetName", "UNKNOWN", index=5, times=1)
    assert dgx_h100.cycle() == "written"
    taints = dgx_h100.node.document["spec"]["taints"]
    assert {"key": C.health_taint, "value": "failed", "effect": "NoSchedule"} in taints
    assert dgx_h100.node.labels[C.gpu_health] == "failed"
    assert dgx_h100.node.labels[C.gpu_nvlink_domain_size] == "8"  # kept: the read was partial


def test_partial_discovery_leaves_the_node_resource_topology_alone(dgx_h100: Machine) -> None:
    from gputopo.agent.publish.calls import PublishResult
    from gputopo.agent.publish.cycle import run_cycle

    published: list[object] = []

    class Nrt:
        def publish(self, topology: object, available: object = None, **kwargs: object) -> Any:
            published.append(topology)
            return PublishResult("unchanged")

    dgx_h100.control.inject_error("nvmlDeviceGetName", "UNKNOWN", index=1, times=1)
    partial = run_cycle(dgx_h100.discoverer.discover, dgx_h100.publisher, nrt=Nrt())
    assert partial.nrt is None and not published
    complete = run_cycle(dgx_h100.discoverer.discover, dgx_h100.publisher, nrt=Nrt())
    assert complete.nrt is not None and len(published) == 1


def test_gpu_lost_is_not_a_partial_discovery(dgx_h100: Machine) -> None:
    dgx_h100.control.set_lost(3)
    topology = dgx_h100.discoverer.discover()
    assert topology.incomplete == ()


# --- value-change hysteresis (plan level) --------------------------------------------------------


def desired(labels: dict[str, str], incomplete: tuple[str, ...] = ()) -> DesiredState:
    return DesiredState(labels, (), {}, None, incomplete)


def apply(view: NodeView, patch: dict[str, Any]) -> NodeView:
    labels, annotations = dict(view.labels), dict(view.annotations)
    for target, part in ((labels, "labels"), (annotations, "annotations")):
        for key, value in patch.get("metadata", {}).get(part, {}).items():
            if value is None:
                target.pop(key, None)
            else:
                target[key] = value
    return NodeView(view.name, view.resource_version, labels, annotations, view.taints)


def owned_node(labels: dict[str, str]) -> NodeView:
    return NodeView("n1", "1", labels, {C.owned_labels_annotation: ",".join(sorted(labels))}, ())


def test_topology_value_changes_only_after_removal_hysteresis() -> None:
    view = owned_node({C.numa_nodes: "2", C.gpu_numa_max: "4"})
    want = desired({C.numa_nodes: "2", C.gpu_numa_max: "8"})
    for _ in range(2):
        result = plan(view, want, C, removal_after=3)
        assert "labels" not in result.patch["metadata"]
        view = apply(view, result.patch)
    result = plan(view, want, C, removal_after=3)
    assert result.patch["metadata"]["labels"] == {C.gpu_numa_max: "8"}
    view = apply(view, result.patch)
    assert C.pending_removal_annotation not in view.annotations


def test_a_flapping_value_never_reaches_the_node() -> None:
    view = owned_node({C.gpu_rdma: "true"})
    for value in ("false", "true", "false", "true", "false", "true"):
        result = plan(view, desired({C.gpu_rdma: value}), C, removal_after=3)
        assert "labels" not in result.patch.get("metadata", {})
        view = apply(view, result.patch)
    assert view.labels[C.gpu_rdma] == "true"


def test_partial_discovery_neither_changes_nor_removes_nor_counts() -> None:
    view = owned_node({C.numa_nodes: "2", C.gpu_numa_max: "4", C.gpu_health: "ok"})
    view = NodeView(
        "n1",
        "1",
        view.labels,
        {**view.annotations, C.pending_removal_annotation: '{"value:gputopo.io/gpu.numa-max=8":2}'},
        (),
    )
    partial = desired({C.gpu_numa_max: "8", C.gpu_health: "degraded"}, ("sysfs: gone",))
    result = plan(view, partial, C, removal_after=3)
    assert result.patch["metadata"]["labels"] == {C.gpu_health: "degraded"}
    assert C.pending_removal_annotation not in result.patch["metadata"].get("annotations", {})


def test_gfd_count_follows_a_lost_gpu_at_once() -> None:
    """GFD-compatible labels keep GFD's meaning (no hysteresis of their own)."""
    view = owned_node({Gfd.GPU_COUNT: "8"})
    result = plan(view, desired({Gfd.GPU_COUNT: "7"}), C, removal_after=3)
    assert result.patch["metadata"]["labels"] == {Gfd.GPU_COUNT: "7"}
