"""Gang state: holding places, completing, rejecting, timing out, Coscheduling's messages."""

from __future__ import annotations

from typing import Any

from gputopo.scheduler.gang import (
    DEFAULT_TIMEOUT_S,
    POD_GROUP_LABEL,
    TOPOLOGY_ANNOTATION,
    TOPOLOGY_POLICY_ANNOTATION,
    GangCoordinator,
    GangTopology,
    PodGroupSpec,
    domain_of_placed,
    free_capacity,
    group_key_of,
    group_status,
    in_domain,
    min_resources_message,
    plan_domain,
    resource_gap,
    too_few_message,
)
from gputopo.scheduler.snapshot import ClusterSnapshot
from tests.unit.scheduler.ext_builders import gpu_node, gpu_pod


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _group(name: str, min_member: int, timeout: int | None = None) -> dict[str, object]:
    spec: dict[str, object] = {"minMember": min_member}
    if timeout is not None:
        spec["scheduleTimeoutSeconds"] = timeout
    return {"metadata": {"name": name, "namespace": "ml"}, "spec": spec}


def test_group_key_comes_from_the_coscheduling_label() -> None:
    member = {"metadata": {"name": "w-0", "namespace": "ml", "labels": {POD_GROUP_LABEL: "job"}}}
    assert group_key_of(member) == "ml/job"
    assert group_key_of({"metadata": {"name": "solo", "namespace": "ml"}}) is None


def test_podgroup_spec_defaults() -> None:
    spec = PodGroupSpec.from_json({"metadata": {"name": "job"}, "spec": {}})
    assert (spec.key, spec.min_member, spec.timeout_s) == ("default/job", 1, DEFAULT_TIMEOUT_S)


def test_members_hold_places_until_min_member_then_release_together() -> None:
    gang = GangCoordinator()
    gang.upsert_group(_group("job", 3))
    assert gang.hold("ml/job", "ml/w-0", "item-0", "n1", bound_members=0) is None
    assert gang.hold("ml/job", "ml/w-1", "item-1", "n2", bound_members=0) is None
    assert gang.is_waiting("ml/job", "ml/w-1")
    ready = gang.hold("ml/job", "ml/w-2", "item-2", "n1", bound_members=0)
    assert ready == [("item-0", "n1"), ("item-1", "n2"), ("item-2", "n1")]
    assert gang.waiting_count("ml/job") == 0


def test_already_bound_members_count_towards_min_member() -> None:
    gang = GangCoordinator()
    gang.upsert_group(_group("job", 3))
    assert gang.hold("ml/job", "ml/w-2", "item-2", "n1", bound_members=2) == [("item-2", "n1")]


def test_reject_releases_every_held_place() -> None:
    gang = GangCoordinator()
    gang.upsert_group(_group("job", 4))
    gang.hold("ml/job", "ml/w-0", "item-0", "n1", bound_members=0)
    gang.hold("ml/job", "ml/w-1", "item-1", "n1", bound_members=0)
    assert gang.release("ml/job") == [("item-0", "n1"), ("item-1", "n1")]
    assert gang.release("ml/job") == []


def test_timeout_counts_from_the_first_held_place() -> None:
    clock = FakeClock()
    gang = GangCoordinator(clock=clock)
    gang.upsert_group(_group("job", 4, timeout=5))
    gang.hold("ml/job", "ml/w-0", "item-0", "n1", bound_members=0)
    clock.now += 4
    gang.hold("ml/job", "ml/w-1", "item-1", "n1", bound_members=0)
    assert gang.expired() == {}
    clock.now += 1
    assert gang.expired() == {"ml/job": [("item-0", "n1"), ("item-1", "n1")]}
    assert gang.waiting_count("ml/job") == 0


def test_a_deleted_waiting_member_no_longer_holds() -> None:
    gang = GangCoordinator()
    gang.upsert_group(_group("job", 3))
    gang.hold("ml/job", "ml/w-0", "item-0", "n1", bound_members=0)
    gang.drop("ml/job", "ml/w-0")
    assert gang.waiting_count("ml/job") == 0


def test_too_few_message_is_coschedulings() -> None:
    assert too_few_message("ml/w-0", 7, 8) == (
        "pre-filter pod w-0 cannot find enough sibling pods, "
        "current pods number: 7, minMember of group: 8"
    )


# -- PodGroup spec: minResources, topology annotations, bad input ---------------------------


def _annotated(name: str, min_member: int, **annotations: str) -> dict[str, object]:
    group = _group(name, min_member)
    group["metadata"] = {"name": name, "namespace": "ml", "annotations": annotations}
    return group


def test_min_resources_are_parsed_in_scheduler_units() -> None:
    group = _group("job", 2)
    group["spec"] = {"minMember": 2, "minResources": {"nvidia.com/gpu": 16, "cpu": "1500m"}}
    spec = PodGroupSpec.from_json(group)
    assert spec.min_resources == (("cpu", 1500), ("nvidia.com/gpu", 16))
    assert spec.invalid is None


def test_a_bad_min_resources_quantity_is_one_line_naming_the_field() -> None:
    group = _group("job", 2)
    group["spec"] = {"minMember": 2, "minResources": {"memory": "lots"}}
    assert PodGroupSpec.from_json(group).invalid == (
        "PodGroup ml/job: spec.minResources.memory: expected a quantity, got 'lots'"
    )


def test_topology_annotation_defaults_to_preferred() -> None:
    spec = PodGroupSpec.from_json(_annotated("job", 2, **{TOPOLOGY_ANNOTATION: "rack"}))
    assert spec.topology == GangTopology("rack", required=False)
    spec = PodGroupSpec.from_json(
        _annotated(
            "job",
            2,
            **{
                TOPOLOGY_ANNOTATION: "nvidia.com/gpu.clique",
                TOPOLOGY_POLICY_ANNOTATION: "required",
            },
        )
    )
    assert spec.topology == GangTopology("nvidia.com/gpu.clique", required=True)


def test_bad_topology_annotations_name_the_annotation() -> None:
    bad_policy = PodGroupSpec.from_json(
        _annotated("job", 2, **{TOPOLOGY_ANNOTATION: "rack", TOPOLOGY_POLICY_ANNOTATION: "must"})
    )
    assert bad_policy.invalid == (
        "PodGroup ml/job: annotation gputopo.io/gang-topology-policy: "
        "expected required or preferred, got 'must'"
    )
    bad_key = PodGroupSpec.from_json(_annotated("job", 2, **{TOPOLOGY_ANNOTATION: "not a key"}))
    assert bad_key.invalid == (
        "PodGroup ml/job: annotation gputopo.io/gang-topology: "
        "expected a node label key, got 'not a key'"
    )


# -- minResources against free capacity ------------------------------------------------------


def _member(name: str, gpus: int, node: str | None = None, group: str = "job") -> dict[str, Any]:
    pod = gpu_pod(name, gpus, node_name=node, namespace="ml")
    pod["metadata"]["labels"] = {POD_GROUP_LABEL: group}
    return pod


def test_free_capacity_counts_the_groups_own_placed_members_as_free() -> None:
    snapshot = ClusterSnapshot()
    snapshot.add_node(gpu_node("n1", gpus=8))
    snapshot.add_node(gpu_node("n2", gpus=8))
    snapshot.add_pod(_member("other-0", 6, "n1", group="other"))
    snapshot.add_pod(_member("w-0", 2, "n2"))
    free = free_capacity(snapshot, ["nvidia.com/gpu", "pods"], "ml/job")
    assert free == {"nvidia.com/gpu": 16 - 6, "pods": 220 - 1}


def test_resource_gap_names_what_is_missing_including_min_member_pods() -> None:
    group = _group("job", 3)
    group["spec"] = {"minMember": 3, "minResources": {"nvidia.com/gpu": 12}}
    spec = PodGroupSpec.from_json(group)
    assert resource_gap(spec, {"nvidia.com/gpu": 16, "pods": 3}) == {}
    gap = resource_gap(spec, {"nvidia.com/gpu": 10, "pods": 2})
    assert gap == {"nvidia.com/gpu": 2, "pods": 1}
    assert min_resources_message("ml/job", gap) == (
        "pod group ml/job: too little free capacity for minResources, "
        "resource gap: nvidia.com/gpu: 2, pods: 1"
    )


# -- topology domains --------------------------------------------------------------------------


def test_in_domain_adds_a_node_selector_without_touching_the_original() -> None:
    pod = gpu_pod("w-0", 1, nodeSelector={"pool": "a"})
    constrained = in_domain(pod, "rack", "r2")
    assert constrained["spec"]["nodeSelector"] == {"pool": "a", "rack": "r2"}
    assert pod["spec"]["nodeSelector"] == {"pool": "a"}


def test_domain_of_placed_members_is_the_most_common_labelled_value() -> None:
    assert domain_of_placed(["r2", "r1", "r2", None]) == "r2"
    assert domain_of_placed(["r2", "r1"]) == "r1"  # a tie: the smallest, deterministic
    assert domain_of_placed([None]) is None


def test_plan_domain_picks_the_first_value_holding_every_member_and_undoes_trials() -> None:
    room = {"r1": 1, "r2": 3}  # free GPUs per rack
    used: dict[str, int] = {}
    undone: list[int] = []

    def place(pod: dict[str, Any]) -> str | None:
        rack = pod["spec"]["nodeSelector"]["rack"]
        if used.get(rack, 0) >= room[rack]:
            return None
        used[rack] = used.get(rack, 0) + 1
        return f"node-in-{rack}"

    def undo() -> None:
        undone.append(sum(used.values()))
        used.clear()

    members = [gpu_pod(f"w-{i}", 1) for i in range(3)]
    assert plan_domain("rack", ["r2", "r1"], members, place, undo) == "r2"
    assert undone == [1, 3]  # r1 tried (one placed, then undone), then r2
    assert plan_domain("rack", ["r1"], members, place, undo) is None


# -- group back-off ----------------------------------------------------------------------------


def test_a_group_backs_off_as_a_whole_and_is_reported_once_when_it_ends() -> None:
    clock = FakeClock()
    gang = GangCoordinator(clock=clock)
    gang.upsert_group(_group("job", 2))
    gang.back_off("ml/job", 10)
    clock.now += 4
    assert gang.backoff_remaining("ml/job") == 6
    assert gang.backoffs_ended() == []
    clock.now += 6
    assert gang.backoff_remaining("ml/job") == 0
    assert gang.backoffs_ended() == ["ml/job"]
    assert gang.backoffs_ended() == []


def test_a_changed_podgroup_spec_ends_its_back_off() -> None:
    gang = GangCoordinator(clock=FakeClock())
    gang.upsert_group(_group("job", 8))
    gang.back_off("ml/job", 10)
    gang.upsert_group(_group("job", 8))  # unchanged: still backing off
    assert gang.backoff_remaining("ml/job") == 10
    gang.upsert_group(_group("job", 4))
    assert gang.backoff_remaining("ml/job") == 0


def test_release_and_timeout_forget_the_chosen_domain() -> None:
    clock = FakeClock()
    gang = GangCoordinator(clock=clock)
    gang.upsert_group(_group("job", 2, timeout=5))
    gang.choose_domain("ml/job", "r1")
    gang.hold("ml/job", "ml/w-0", "item-0", "n1", bound_members=0)
    assert gang.held_nodes("ml/job") == ["n1"]
    clock.now += 5
    gang.expired()
    assert gang.domain("ml/job") is None


# -- status --------------------------------------------------------------------------------------


def _status(members: list[dict[str, Any]], holding: int = 0, turned_away: bool = False) -> str:
    return str(group_status(2, members, holding, turned_away, {}, "T")["phase"])


def test_group_status_phases_follow_coscheduling() -> None:
    pending = [_member("w-0", 1), _member("w-1", 1)]
    assert _status(pending[:1]) == "Pending"  # fewer than minMember pods
    assert _status(pending) == "PreScheduling"
    assert _status(pending, turned_away=True) == "Pending"
    assert _status(pending, holding=1) == "Scheduling"
    bound = [_member("w-0", 1, "n1"), _member("w-1", 1, "n1")]
    for pod in bound:
        pod["status"]["phase"] = "Pending"
    assert _status(bound) == "Scheduled"
    for pod in bound:
        pod["status"]["phase"] = "Running"
    assert _status(bound) == "Running"
    bound[0]["status"]["phase"] = "Failed"
    assert _status(bound) == "Failed"
    for pod in bound:
        pod["status"]["phase"] = "Succeeded"
    assert _status(bound) == "Finished"


def test_group_status_counts_owner_and_start_time() -> None:
    members = [_member("w-0", 1, "n1"), _member("w-1", 1)]
    members[0]["metadata"]["ownerReferences"] = [{"kind": "Job", "name": "train"}]
    status = group_status(2, members, 1, False, {}, "2026-01-01T00:00:00Z")
    assert status == {
        "phase": "Scheduling",
        "scheduled": 1,
        "running": 1,
        "succeeded": 0,
        "failed": 0,
        "occupiedBy": "ml/train",
        "scheduleStartTime": "2026-01-01T00:00:00Z",
    }
    later = group_status(2, members, 1, False, status, "2026-01-01T00:05:00Z")
    assert later["scheduleStartTime"] == "2026-01-01T00:00:00Z"  # the first start is kept
    assert "scheduleStartTime" not in group_status(2, members[1:], 0, False, {}, "T")
