"""Ownership that cannot be forged: the agent owns only keys it would publish itself, ignores and
reports other claims, re-derives ownership when its annotation is lost, and still writes its
health taint when the API server refuses the rest of a patch."""

from __future__ import annotations

from typing import Any

import pytest

from gputopo.agent.publish.calls import ApiCallFailed
from gputopo.agent.publish.desired import DesiredState
from gputopo.agent.publish.plan import FIELD_MANAGER, NodeView, Ownership, plan, plan_prune
from gputopo.agent.publish.writer import Publisher
from gputopo.core.contract import GFD_LABEL_KEYS, Contract, Gfd, is_gfd_label_key
from gputopo.core.retry import Backoff
from gputopo.core.validate import Taint
from tests.unit.agent.machines import degraded, dgx_h100

C = Contract()
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def desired(labels: dict[str, str], taints: tuple[Taint, ...] = ()) -> DesiredState:
    return DesiredState(labels=labels, taints=taints, annotations={}, sla_state=None)


def node(
    labels: dict[str, str],
    annotations: dict[str, str] | None = None,
    taints: tuple[dict[str, Any], ...] = (),
    managed: frozenset[str] = frozenset(),
) -> NodeView:
    return NodeView("n1", "7", labels, annotations or {}, taints, managed)


# --- the key grammar -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        Gfd.GPU_PRODUCT,
        Gfd.GPU_COUNT,
        "nvidia.com/gpu.slices.gi",
        "nvidia.com/mig-1g.10gb.count",
        "nvidia.com/mig-1g.10gb.me.product",
        "nvidia.com/mig-1c.3g.40gb.engines.copy",
    ],
)
def test_keys_gputopo_publishes_are_in_the_gfd_set(key: str) -> None:
    assert is_gfd_label_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "nvidia.com/mig.config",
        "nvidia.com/mig.config.state",
        "nvidia.com/gpu.deploy.driver",
        "nvidia.com/gpu.deploy.operands",
        "nvidia.com/gpu.present",
        "nvidia.com/gpu",
        "nvidia.com/mig-1g.10gb.bogus",
        "nvidia.com/mig-../x.count",
        "team",
    ],
)
def test_operator_controls_and_other_keys_are_not(key: str) -> None:
    assert not is_gfd_label_key(key)
    assert not C.may_own_label(key)


def test_every_label_the_agent_computes_is_one_it_may_own() -> None:
    from gputopo.agent.labels import LabelOptions, compute_labels
    from tests.unit.agent.machines import a100_mig, gb200_fabric, one_g, three_g

    machines = [dgx_h100(), gb200_fabric(), a100_mig({0: (one_g(1, 0), three_g(2, 4))})]
    for topology in machines:
        for strategy in ("none", "single", "mixed"):
            keys = compute_labels(topology, LabelOptions(mig_strategy=strategy))
            assert all(C.may_own_label(key) for key in keys), sorted(keys)
    assert Gfd.GPU_PRODUCT in GFD_LABEL_KEYS


# --- forged claims -------------------------------------------------------------------------------


def test_forged_owned_label_of_another_writer_is_ignored_and_reported() -> None:
    forged = f"team,nvidia.com/mig.config,{C.sla}"
    view = node(
        {"team": "ml", "nvidia.com/mig.config": "all-1g.10gb", C.sla: "1000"},
        {C.owned_labels_annotation: forged},
    )
    result = plan(view, desired({C.sla: "1000"}), C, removal_after=1)
    labels = result.patch["metadata"].get("labels", {})
    assert "team" not in labels and "nvidia.com/mig.config" not in labels
    assert result.ignored_ownership == ("label nvidia.com/mig.config", "label team")
    # the annotation is rewritten to what the agent really owns
    assert result.patch["metadata"]["annotations"][C.owned_labels_annotation] == C.sla


def test_forged_owned_taint_of_the_gpu_operator_is_never_removed() -> None:
    view = node(
        {},
        {C.owned_taints_annotation: "nvidia.com/gpu:NoSchedule"},
        taints=(GPU_TAINT,),
    )
    result = plan(view, desired({}), C, removal_after=1)
    assert result.ignored_ownership == ("taint nvidia.com/gpu:NoSchedule",)
    assert "spec" not in result.patch  # the operator's taint is not touched
    pruned = plan_prune(view, C)
    assert "spec" not in pruned.patch
    assert pruned.ignored_ownership == ("taint nvidia.com/gpu:NoSchedule",)


def test_prune_with_a_forged_annotation_removes_only_keys_gputopo_writes() -> None:
    view = node(
        {"team": "ml", Gfd.GPU_COUNT: "8"},
        {C.owned_labels_annotation: f"team,{Gfd.GPU_COUNT}"},
    )
    labels = plan_prune(view, C).patch["metadata"]["labels"]
    assert labels == {Gfd.GPU_COUNT: None}


# --- a lost or garbled annotation ----------------------------------------------------------------


@pytest.mark.parametrize("annotation", [None, "", ",,,{garbage", "not a list at all"])
def test_lost_annotation_rederives_ownership_from_managed_fields(annotation: str | None) -> None:
    """The stale gpu.count=99 the agent itself wrote is corrected, not disowned."""
    annotations = {} if annotation is None else {C.owned_labels_annotation: annotation}
    view = node(
        {Gfd.GPU_COUNT: "99", Gfd.GPU_PRODUCT: "From-GFD"},
        annotations,
        managed=frozenset({Gfd.GPU_COUNT}),
    )
    want = {Gfd.GPU_COUNT: "8", Gfd.GPU_PRODUCT: "NVIDIA-H100-80GB-HBM3"}
    result = plan(view, desired(want), C, removal_after=3)
    labels = result.patch["metadata"]["labels"]
    assert labels == {Gfd.GPU_COUNT: "8"}  # GFD's product stays GFD's
    assert result.skipped_foreign == (f"label {Gfd.GPU_PRODUCT}",)
    owned = result.patch["metadata"]["annotations"][C.owned_labels_annotation]
    assert owned == Gfd.GPU_COUNT


def test_lost_annotation_keeps_owned_keys_under_removal_hysteresis() -> None:
    view = node({Gfd.GPU_CLIQUE: "c.1"}, {}, managed=frozenset({Gfd.GPU_CLIQUE}))
    result = plan(view, desired({}), C, removal_after=3)
    assert "labels" not in result.patch["metadata"]  # pending, not removed at once
    assert Ownership.of(view, C).labels == {Gfd.GPU_CLIQUE}


def test_managed_fields_of_the_agent_are_read_from_the_node() -> None:
    document = {
        "metadata": {
            "name": "n1",
            "labels": {Gfd.GPU_COUNT: "8", "team": "ml"},
            "managedFields": [
                {
                    "manager": FIELD_MANAGER,
                    "operation": "Update",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:labels": {f"f:{Gfd.GPU_COUNT}": {}}}},
                },
                {
                    "manager": "kubectl",
                    "fieldsV1": {"f:metadata": {"f:labels": {"f:team": {}}}},
                },
                {"manager": FIELD_MANAGER, "fieldsV1": "garbage"},
            ],
        }
    }
    view = NodeView.from_dict(document)
    assert view.managed_labels == {Gfd.GPU_COUNT}


def test_annotation_rewritten_by_another_writer_cannot_hand_over_gfd_keys() -> None:
    """managedFields says someone else last set the annotation: its nvidia.com/* entries count
    only where the agent's field manager holds the label."""
    view = NodeView(
        "n1",
        "7",
        {Gfd.GPU_PRODUCT: "From-GFD", Gfd.GPU_COUNT: "8"},
        {C.owned_labels_annotation: f"{Gfd.GPU_COUNT},{Gfd.GPU_PRODUCT},{C.sla}"},
        (),
        managed_labels=frozenset({Gfd.GPU_COUNT}),
        managed_annotations=frozenset(),
    )
    ownership = Ownership.of(view, C)
    assert ownership.labels == {Gfd.GPU_COUNT, C.sla}
    assert ownership.ignored == (f"label {Gfd.GPU_PRODUCT}",)
    trusted = NodeView(
        "n1",
        "7",
        view.labels,
        view.annotations,
        (),
        managed_labels=frozenset({Gfd.GPU_COUNT}),
        managed_annotations=frozenset({C.owned_labels_annotation}),
    )
    assert Gfd.GPU_PRODUCT in Ownership.of(trusted, C).labels  # e.g. GFD later overwrote it


def test_lost_taint_annotation_still_owns_the_health_taint() -> None:
    taint = {"key": C.health_taint, "value": "failed", "effect": "NoSchedule"}
    view = node({}, {}, taints=(taint, GPU_TAINT))
    result = plan(view, desired({}), C, removal_after=1)
    assert result.patch["spec"]["taints"] == [GPU_TAINT]


# --- a refused patch still carries the health taint ----------------------------------------------


class RefusingApi:
    """Refuses any patch that touches a label (as an admission policy denying one key would)."""

    def __init__(self) -> None:
        self.node: dict[str, Any] = {"metadata": {"name": "n1", "resourceVersion": "1"}}
        self.patches: list[dict[str, Any]] = []

    def read_node(self, name: str) -> dict[str, Any]:
        return self.node

    def patch_node(self, name: str, body: Any, **kwargs: Any) -> Any:
        self.patches.append(body)
        if "labels" in body["metadata"]:
            raise ApiCallFailed("HTTP 403 Forbidden: denied by policy", 403)
        self.node = {
            "metadata": {"name": "n1", "resourceVersion": "2"},
            "spec": {"taints": body["spec"]["taints"]},
        }
        return self.node


def test_a_denied_label_never_blocks_the_health_taint() -> None:
    api = RefusingApi()
    backoff = Backoff(max_attempts=1, sleep=lambda seconds: None)
    publisher = Publisher(api, "n1", backoff=backoff)
    result = publisher.publish(degraded(dgx_h100(), 3, lost=True))
    assert result.status == "error" and "403" in result.message
    taints = api.node["spec"]["taints"]
    assert {"key": C.health_taint, "value": "failed", "effect": "NoSchedule"} in taints
    assert publisher.counters.writes == 1


def test_ignored_claims_and_partial_discoveries_are_metrics() -> None:
    from prometheus_client import generate_latest

    from gputopo.agent.metrics import AgentStats, MetricsCollector, MetricsSnapshot, build_registry

    stats = AgentStats()
    stats.record_publish_checks(partial_discoveries=2, foreign_owned_keys=3)
    registry = build_registry(MetricsCollector(lambda: MetricsSnapshot(), stats, version="1"))
    text = generate_latest(registry).decode()
    assert "gputopo_agent_partial_discoveries_total 2.0" in text
    assert "gputopo_agent_foreign_owned_keys 3.0" in text


def test_an_own_key_taint_is_rederived_only_when_the_taint_annotation_is_lost() -> None:
    sla = {"key": C.sla_taint, "value": "900", "effect": "PreferNoSchedule"}
    health = {"key": C.health_taint, "value": "failed", "effect": "NoSchedule"}
    recorded = node({}, {C.owned_taints_annotation: f"{C.sla_taint}:PreferNoSchedule"})
    recorded = NodeView("n1", "7", {}, recorded.annotations, (sla, health))
    assert Ownership.of(recorded, C).taints == {f"{C.sla_taint}:PreferNoSchedule"}
    lost = NodeView("n1", "7", {}, {}, (sla, health, GPU_TAINT))
    assert Ownership.of(lost, C).taints == {
        f"{C.sla_taint}:PreferNoSchedule",
        f"{C.health_taint}:NoSchedule",
    }
