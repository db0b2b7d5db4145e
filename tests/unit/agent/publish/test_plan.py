"""Planning a Node update: ownership, foreign keys, removal hysteresis, no-op, prune."""

from __future__ import annotations

import json
from typing import Any

from gputopo.agent.publish.desired import DesiredState, PublishOptions, desired_state
from gputopo.agent.publish.plan import NodeView, fresh_node_publication, plan, plan_prune
from gputopo.core.contract import Contract
from gputopo.core.validate import Taint, ValidationGate
from tests.unit.agent.machines import dgx_h100

C = Contract()


def desired(labels: dict[str, str], taints: tuple[Taint, ...] = ()) -> DesiredState:
    return DesiredState(labels=labels, taints=taints, annotations={}, sla_state=None)


def apply(node: NodeView, patch: dict[str, Any]) -> NodeView:
    """What a JSON merge patch does to the node (enough for these tests)."""
    labels = dict(node.labels)
    annotations = dict(node.annotations)
    for key, value in patch.get("metadata", {}).get("labels", {}).items():
        if value is None:
            labels.pop(key, None)
        else:
            labels[key] = value
    for key, value in patch.get("metadata", {}).get("annotations", {}).items():
        if value is None:
            annotations.pop(key, None)
        else:
            annotations[key] = value
    taints = tuple(patch["spec"]["taints"]) if "spec" in patch else node.taints
    return NodeView(node.name, node.resource_version + "x", labels, annotations, taints)


def empty_node(**labels: str) -> NodeView:
    return NodeView("n1", "1", dict(labels), {}, ())


def test_fresh_node_gets_labels_and_ownership() -> None:
    result = plan(empty_node(), desired({"gputopo.io/sla": "1000"}), C, 3)
    metadata = result.patch["metadata"]
    assert metadata["resourceVersion"] == "1"
    assert metadata["labels"] == {"gputopo.io/sla": "1000"}
    assert metadata["annotations"][C.owned_labels_annotation] == "gputopo.io/sla"


def test_second_plan_is_empty() -> None:
    want = desired({"gputopo.io/sla": "1000"}, (Taint("gputopo.io/sla", "1000", "NoSchedule"),))
    node = apply(empty_node(), plan(empty_node(), want, C, 3).patch)
    again = plan(node, want, C, 3)
    assert again.empty and again.patch == {}


def test_foreign_gfd_label_is_left_alone() -> None:
    node = empty_node(**{"nvidia.com/gpu.product": "Written-By-GFD"})
    result = plan(node, desired({"nvidia.com/gpu.product": "NVIDIA-H100"}), C, 3)
    assert result.empty
    assert result.skipped_foreign == ("label nvidia.com/gpu.product",)


def test_own_prefix_label_is_taken_over() -> None:
    node = empty_node(**{"gputopo.io/sla": "5"})
    result = plan(node, desired({"gputopo.io/sla": "1000"}), C, 3)
    assert result.patch["metadata"]["labels"] == {"gputopo.io/sla": "1000"}


def test_unrelated_labels_are_never_in_the_patch() -> None:
    node = empty_node(**{"kubernetes.io/hostname": "n1", "team": "ml"})
    result = plan(node, desired({"gputopo.io/sla": "1000"}), C, 3)
    assert set(result.patch["metadata"]["labels"]) == {"gputopo.io/sla"}


def test_owned_label_removed_only_after_n_absences() -> None:
    want = desired({"gputopo.io/a": "1", "gputopo.io/b": "2"})
    node = apply(empty_node(), plan(empty_node(), want, C, 3).patch)
    without_b = desired({"gputopo.io/a": "1"})
    for expected_misses in (1, 2):
        node = apply(node, plan(node, without_b, C, 3).patch)
        assert node.labels["gputopo.io/b"] == "2"
        pending = json.loads(node.annotations[C.pending_removal_annotation])
        assert pending == {"label:gputopo.io/b": expected_misses}
    node = apply(node, plan(node, without_b, C, 3).patch)
    assert "gputopo.io/b" not in node.labels
    assert C.pending_removal_annotation not in node.annotations
    assert node.annotations[C.owned_labels_annotation] == "gputopo.io/a"


def test_key_that_comes_back_clears_its_pending_removal() -> None:
    want = desired({"gputopo.io/a": "1", "gputopo.io/b": "2"})
    node = apply(empty_node(), plan(empty_node(), want, C, 3).patch)
    node = apply(node, plan(node, desired({"gputopo.io/a": "1"}), C, 3).patch)
    node = apply(node, plan(node, want, C, 3).patch)
    assert C.pending_removal_annotation not in node.annotations


def test_foreign_taints_are_kept_in_place() -> None:
    foreign = {"key": "dedicated", "value": "ml", "effect": "NoSchedule"}
    node = NodeView("n1", "7", {}, {}, (foreign,))
    want = desired({}, (Taint("gputopo.io/sla", "950", "PreferNoSchedule"),))
    taints = plan(node, want, C, 3).patch["spec"]["taints"]
    assert taints == [
        foreign,
        {"key": "gputopo.io/sla", "value": "950", "effect": "PreferNoSchedule"},
    ]


def test_taint_value_change_updates_in_place() -> None:
    want = desired({}, (Taint("gputopo.io/sla", "1000", "PreferNoSchedule"),))
    node = apply(empty_node(), plan(empty_node(), want, C, 3).patch)
    worse = desired({}, (Taint("gputopo.io/sla", "700", "PreferNoSchedule"),))
    result = plan(node, worse, C, 3)
    assert result.patch["spec"]["taints"] == [
        {"key": "gputopo.io/sla", "value": "700", "effect": "PreferNoSchedule"}
    ]
    assert [c.describe() for c in result.changes] == [
        "~ taint gputopo.io/sla: 1000:PreferNoSchedule -> 700:PreferNoSchedule"
    ]


def test_owned_taint_removed_after_hysteresis() -> None:
    health = Taint("gputopo.io/gpu-health", "failed", "NoSchedule")
    node = apply(empty_node(), plan(empty_node(), desired({}, (health,)), C, 2).patch)
    node = apply(node, plan(node, desired({}), C, 2).patch)
    assert [t["key"] for t in node.taints] == ["gputopo.io/gpu-health"]
    node = apply(node, plan(node, desired({}), C, 2).patch)
    assert node.taints == ()
    assert C.owned_taints_annotation not in node.annotations


def test_prune_removes_only_owned() -> None:
    want = desired({"gputopo.io/a": "1"}, (Taint("gputopo.io/sla", "1", "NoSchedule"),))
    base = NodeView(
        "n1",
        "1",
        {"team": "ml", "nvidia.com/gpu.product": "GFD"},
        {"other": "x"},
        ({"key": "dedicated", "value": "ml", "effect": "NoSchedule"},),
    )
    node = apply(base, plan(base, want, C, 3).patch)
    pruned = apply(node, plan_prune(node, C).patch)
    assert pruned.labels == base.labels
    assert pruned.annotations == base.annotations
    assert pruned.taints == base.taints
    assert plan_prune(pruned, C).empty


def test_fresh_node_publication_is_what_labels_prints() -> None:
    options = PublishOptions()
    want = desired_state(dgx_h100(), options, ValidationGate())
    labels, taints, annotations = fresh_node_publication(want, options.contract)
    assert labels == want.labels
    assert taints == [{"key": "gputopo.io/sla", "value": "1000", "effect": "PreferNoSchedule"}]
    assert set(annotations) == {
        C.topology_annotation,
        C.owned_labels_annotation,
        C.owned_taints_annotation,
        C.sla_state_annotation,
    }
