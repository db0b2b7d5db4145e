"""Gang state: holding places, completing, rejecting, timing out, Coscheduling's messages."""

from __future__ import annotations

from scheduler.gang import (
    DEFAULT_TIMEOUT_S,
    POD_GROUP_LABEL,
    GangCoordinator,
    PodGroupSpec,
    group_key_of,
    too_few_message,
)


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
