"""Kubernetes' own PodGroup (scheduling.k8s.io/v1beta1): membership, spec, keys, status."""

from __future__ import annotations

from typing import Any

import pytest

from gputopo.scheduler.gang import (
    DEFAULT_TIMEOUT_S,
    NATIVE_PODGROUP_API,
    NATIVE_SCHEDULED_CONDITION,
    POD_GROUP_LABEL,
    PODGROUP_API,
    GangCoordinator,
    GangTopology,
    PodGroupSpec,
    free_capacity,
    group_key_of,
    group_key_of_model,
    group_key_of_podgroup,
    native_group_condition,
    no_domain_message,
    not_found_message,
    split_group_key,
    too_few_message,
)
from gputopo.scheduler.model import parse_pod
from gputopo.scheduler.snapshot import ClusterSnapshot
from tests.unit.scheduler.ext_builders import gpu_node, gpu_pod

NOW = "2026-12-06T04:00:00Z"


def _native(
    name: str = "train",
    policy: dict[str, Any] | None = None,
    topology_key: object = None,
    list_item: bool = False,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"schedulingPolicy": policy or {"gang": {"minCount": 4}}}
    if topology_key is not None:
        spec["schedulingConstraints"] = {"topology": [{"key": topology_key}]}
    obj: dict[str, Any] = {"metadata": {"name": name, "namespace": "ml"}, "spec": spec}
    if not list_item:
        obj = {"apiVersion": "scheduling.k8s.io/v1beta1", "kind": "PodGroup", **obj}
    return obj


def _member(name: str, group: str = "train", node: str = "", **labels: str) -> dict[str, Any]:
    pod = gpu_pod(name, gpus=8, namespace="ml", node_name=node or None)
    pod["metadata"]["labels"] = dict(labels)
    pod["spec"]["schedulingGroup"] = {"podGroupName": group}
    return pod


def test_a_pod_naming_a_native_podgroup_is_a_member_under_a_key_of_its_own() -> None:
    pod = _member("w-0")
    assert group_key_of(pod) == "scheduling.k8s.io/ml/train"
    assert group_key_of_model(parse_pod(pod)) == "scheduling.k8s.io/ml/train"
    # The Coscheduling group of the same name is another group.
    coscheduled = gpu_pod("w-1", namespace="ml")
    coscheduled["metadata"]["labels"] = {POD_GROUP_LABEL: "train"}
    assert group_key_of(coscheduled) == "ml/train"
    assert group_key_of_model(parse_pod(coscheduled)) == "ml/train"


def test_a_pod_with_both_the_field_and_the_label_belongs_to_the_native_group() -> None:
    pod = _member("w-0", **{POD_GROUP_LABEL: "legacy"})
    assert group_key_of(pod) == "scheduling.k8s.io/ml/train"


def test_keys_split_back_into_the_api_namespace_and_name_of_their_kind() -> None:
    assert split_group_key("scheduling.k8s.io/ml/train") == (NATIVE_PODGROUP_API, "ml", "train")
    assert split_group_key("ml/train") == (PODGROUP_API, "ml", "train")


def test_gang_min_count_and_the_topology_constraint_make_the_spec() -> None:
    spec = PodGroupSpec.from_json(_native(topology_key="nvidia.com/gpu.clique"))
    assert spec.key == "scheduling.k8s.io/ml/train"
    assert spec.min_member == 4
    assert spec.timeout_s == DEFAULT_TIMEOUT_S
    assert spec.topology == GangTopology("nvidia.com/gpu.clique", required=True)
    assert spec.invalid is None


def test_a_basic_policy_is_a_group_of_one() -> None:
    spec = PodGroupSpec.from_json(_native(policy={"basic": {}}))
    assert spec.min_member == 1
    assert spec.invalid is None


def test_list_items_without_api_version_are_read_as_the_watched_kind() -> None:
    item = _native(list_item=True)
    assert group_key_of_podgroup(item, native=True) == "scheduling.k8s.io/ml/train"
    assert PodGroupSpec.from_json(item, native=True).min_member == 4
    assert PodGroupSpec.from_json(item, native=False).key == "ml/train"


@pytest.mark.parametrize(
    ("policy", "topology_key", "named"),
    [
        ({"gang": {"minCount": 0}}, None, "spec.schedulingPolicy.gang.minCount"),
        ({"gang": {"minCount": "4"}}, None, "spec.schedulingPolicy.gang.minCount"),
        ({"gang": {"minCount": True}}, None, "spec.schedulingPolicy.gang.minCount"),
        ({"gang": {"minCount": 2}}, "not a key!", "spec.schedulingConstraints.topology[0].key"),
    ],
)
def test_a_bad_field_makes_the_group_invalid_naming_it(
    policy: dict[str, Any], topology_key: object, named: str
) -> None:
    spec = PodGroupSpec.from_json(_native(policy=policy, topology_key=topology_key))
    assert spec.invalid is not None
    assert spec.invalid.startswith("PodGroup scheduling.k8s.io/ml/train: ")
    assert named in spec.invalid


def test_the_coordinator_keeps_both_kinds_of_one_name_apart() -> None:
    gang = GangCoordinator()
    gang.upsert_group(_native())
    coscheduling = {
        "apiVersion": "scheduling.x-k8s.io/v1alpha1",
        "metadata": {"name": "train", "namespace": "ml"},
        "spec": {"minMember": 2},
    }
    gang.upsert_group(coscheduling)
    native, legacy = gang.group("scheduling.k8s.io/ml/train"), gang.group("ml/train")
    assert native is not None and native.min_member == 4
    assert legacy is not None and legacy.min_member == 2
    gang.delete_group(_native(list_item=True), native=True)
    assert gang.group("scheduling.k8s.io/ml/train") is None
    assert gang.group("ml/train") is not None


def test_free_capacity_counts_the_native_groups_own_placed_members_as_free() -> None:
    snapshot = ClusterSnapshot()
    snapshot.add_node(gpu_node("n1", gpus=8))
    snapshot.add_node(gpu_node("n2", gpus=8))
    snapshot.add_pod(_member("x-0", group="other", node="n1"))
    snapshot.add_pod(_member("w-0", node="n2"))
    coscheduled = gpu_pod("y-0", gpus=8, namespace="ml", node_name="n2")
    coscheduled["metadata"]["labels"] = {POD_GROUP_LABEL: "train"}
    # w-0 is the group's own (free to it); x-0 is another group's, y-0 the Coscheduling
    # group's of the same name: both taken.
    free = free_capacity(snapshot, ["nvidia.com/gpu"], "scheduling.k8s.io/ml/train")
    assert free == {"nvidia.com/gpu": 16 - 8 - 8 + 8}
    snapshot.add_node(gpu_node("n3", gpus=8))
    snapshot.add_pod(coscheduled | {"spec": {**coscheduled["spec"], "nodeName": "n3"}})
    free = free_capacity(snapshot, ["nvidia.com/gpu"], "scheduling.k8s.io/ml/train")
    assert free == {"nvidia.com/gpu": 24 - 8 - 8 - 8 + 8}


def _condition(status: str) -> dict[str, Any]:
    return {
        "type": NATIVE_SCHEDULED_CONDITION,
        "status": status,
        "reason": "Scheduled" if status == "True" else "Unschedulable",
        "message": "m",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }


def test_the_condition_turns_true_when_min_count_members_have_a_node() -> None:
    members = [_member(f"w-{i}", node="n1") for i in range(4)]
    condition = native_group_condition(4, members, None, {}, NOW)
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("True", "Scheduled")
    assert condition["lastTransitionTime"] == NOW


def test_a_true_condition_is_terminal_even_when_members_are_gone() -> None:
    previous = {"conditions": [_condition("True")]}
    condition = native_group_condition(4, [], ("NoPlace", "gone"), previous, NOW)
    assert condition == _condition("True")


def test_a_turned_away_group_is_unschedulable_with_the_reason_and_keeps_its_transition() -> None:
    members = [_member(f"w-{i}") for i in range(4)]
    condition = native_group_condition(4, members, ("NoPlace", "no room in one clique"), {}, NOW)
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("False", "Unschedulable")
    assert condition["message"] == "no room in one clique"
    again = native_group_condition(
        4, members, ("NoPlace", "still none"), {"conditions": [condition]}, "2027-01-01T00:00:00Z"
    )
    assert again is not None
    assert again["lastTransitionTime"] == NOW


def test_a_group_being_tried_has_no_condition_yet() -> None:
    assert native_group_condition(4, [_member("w-0", node="n1")], None, {}, NOW) is None


def test_refusals_of_a_native_group_use_kube_schedulers_words() -> None:
    native = "scheduling.k8s.io/ml/train"
    assert not_found_message(native) == (
        'waiting for pods\'s pod group "train" to appear in scheduling queue'
    )
    assert too_few_message("ml/w-0", 3, 4, native) == (
        "waiting for minCount pods from a gang to appear in scheduling queue (pods: 3, minCount: 4)"
    )
    topology = GangTopology("nvidia.com/gpu.clique", required=True)
    assert no_domain_message(native, topology, 4).endswith("(spec.schedulingConstraints.topology)")
    # Coscheduling's keep theirs.
    assert not_found_message("ml/train") == "pod group ml/train not found"
    assert too_few_message("ml/w-0", 3, 4, "ml/train").startswith("pre-filter pod w-0 cannot find")
