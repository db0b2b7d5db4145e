"""The live rebalance controller on a scripted API server: dry run, acting, 429s, rate limits."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

from gputopo.core.kube import KubeApiError
from gputopo.scheduler.rebalance import RebalancePolicy
from gputopo.scheduler.rebalance_controller import (
    COOLDOWN,
    DISRUPTION_BUDGET,
    NODE_COOLDOWN,
    RebalanceController,
    RebalanceMetrics,
    RebalanceSettings,
    TokenBucket,
    waiting_pods,
)
from gputopo.scheduler.runtime.kube import JsonDict, KubeApi
from tests.unit.scheduler.ext_builders import gpu_node, gpu_pod

NOW = 1_800_000_000.0
LISTS = {
    "/api/v1/nodes": "Node",
    "/api/v1/pods": "Pod",
    "/api/v1/namespaces": "Namespace",
    "/apis/scheduling.k8s.io/v1/priorityclasses": "PriorityClass",
    "/apis/policy/v1/poddisruptionbudgets": "PodDisruptionBudget",
}


class FakeKube:
    """Answers the controller's lists from ``objects``; an eviction deletes the pod unless its
    name is in ``refuse`` (then 429, as the API server answers for a PodDisruptionBudget)."""

    def __init__(self, objects: list[JsonDict], refuse: frozenset[str] = frozenset()) -> None:
        self.objects = objects
        self.refuse = refuse
        self.writes: list[tuple[str, str, Any]] = []
        self.events: list[JsonDict] = []

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout_s: float | None = None,
        decode: bool = True,
    ) -> JsonDict:
        if method == "GET":
            kind = LISTS[path]
            items = [
                {k: v for k, v in obj.items() if k != "kind"}
                for obj in self.objects
                if obj["kind"] == kind
            ]
            return {"items": items, "metadata": {}}
        if path.endswith("/events"):  # the real EventRecorder's writes
            self.events.append(body)
            return {}
        self.writes.append((method, path, body))
        if path.endswith("/eviction"):
            name = path.split("/")[-2]
            if name in self.refuse:
                message = "Cannot evict pod as it would violate the pod's disruption budget."
                raise KubeApiError(
                    method, path, 429, json.dumps({"message": message}), "TooManyRequests"
                )
            self.objects = [o for o in self.objects if o["metadata"].get("name") != name]
            return {}
        if path.endswith("/status"):
            name = path.split("/")[-2]
            for obj in self.objects:
                if obj["metadata"].get("name") == name:
                    obj["status"].update(body["status"])
            return {}
        raise AssertionError(f"unexpected {method} {path}")

    def evicted(self) -> list[str]:
        return [path.split("/")[-2] for m, path, _ in self.writes if path.endswith("/eviction")]

    def nominations(self) -> list[tuple[str, str]]:
        return [
            (path.split("/")[-2], body["status"]["nominatedNodeName"])
            for _, path, body in self.writes
            if path.endswith("/status")
        ]


class Events:
    def __init__(self) -> None:
        self.recorded: list[tuple[str, str, str]] = []

    def record(self, pod: JsonDict, event_type: str, reason: str, action: str, note: str) -> None:
        self.recorded.append((pod["metadata"]["name"], reason, note))

    def reasons(self, name: str) -> list[str]:
        return [reason for pod, reason, _ in self.recorded if pod == name]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _bound(name: str, gpus: int, node: str, priority: int = 0, **labels: str) -> JsonDict:
    pod = gpu_pod(name, gpus, node_name=node)
    pod["spec"]["priority"] = priority
    pod["metadata"]["labels"] = {"app": name.rstrip("0123456789-"), **labels}
    pod["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u"}
        | {"controller": True}
    ]
    return pod


def _waiting(name: str, gpus: int, waited_s: float = 600.0, priority: int = 500) -> JsonDict:
    pod = gpu_pod(name, gpus, schedulerName="gputopo-scheduler")
    pod["spec"]["priority"] = priority
    pod["status"]["conditions"] = [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/4 nodes are available",
            "lastTransitionTime": _stamp(NOW - waited_s),
        }
    ]
    return pod


def _fragmented(*extra: JsonDict) -> list[JsonDict]:
    """node-a holds a 4-GPU high-priority pod and two 1-GPU low ones; node-b and node-c two 1-GPU
    low ones each; node-d (4 GPUs) is empty. An 8-GPU pod fits nowhere, though 18 are free."""
    return [
        gpu_node("node-a"),
        gpu_node("node-b"),
        gpu_node("node-c"),
        gpu_node("node-d", gpus=4),
        _bound("big", 4, "node-a", priority=1000),
        _bound("small-1", 1, "node-a"),
        _bound("small-2", 1, "node-a"),
        _bound("small-3", 1, "node-b"),
        _bound("small-4", 1, "node-b"),
        _bound("small-5", 1, "node-c"),
        _bound("small-6", 1, "node-c"),
        *extra,
    ]


def _controller(
    kube: FakeKube, clock: Clock | None = None, **settings: Any
) -> tuple[RebalanceController, Events, RebalanceMetrics]:
    events, metrics = Events(), RebalanceMetrics()
    controller = RebalanceController(
        cast(KubeApi, kube),
        RebalanceSettings(**settings),
        events,
        metrics,
        clock=clock or Clock(),
        wall_clock=lambda: NOW,
    )
    return controller, events, metrics


def _sample(metrics: RebalanceMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_dry_run_records_the_plan_once_and_evicts_nothing() -> None:
    kube = FakeKube(_fragmented(_waiting("trainer", 8)))
    controller, events, metrics = _controller(kube)
    report = controller.run_once()
    assert [m.frees for m in report.plan.moves] == ["node-b"]
    assert kube.writes == []
    assert events.reasons("trainer") == ["RebalancePlanned"]
    note = events.recorded[0][2]
    assert "default/small-3" in note and "default/small-4" in note and "node-b" in note
    controller.run_once()  # the same plan again: no second event, no second count
    assert events.reasons("trainer") == ["RebalancePlanned"]
    assert _sample(metrics, "gputopo_rebalance_moves_total", mode="dry-run") == 1.0


def test_acting_evicts_through_the_eviction_api_and_nominates_the_freed_node() -> None:
    kube = FakeKube(_fragmented(_waiting("trainer", 8)))
    controller, events, metrics = _controller(kube, dry_run=False)
    report = controller.run_once()
    assert [m.frees for m in report.done] == ["node-b"]
    assert kube.evicted() == ["small-3", "small-4"]
    eviction = next(body for _, path, body in kube.writes if path.endswith("/eviction"))
    assert eviction["apiVersion"] == "policy/v1" and eviction["kind"] == "Eviction"
    assert eviction["deleteOptions"] == {"preconditions": {"uid": "uid-small-3"}}
    assert kube.nominations() == [("trainer", "node-b")]
    nominated_at = next(i for i, (_, path, _) in enumerate(kube.writes) if "status" in path)
    assert nominated_at == 0  # the room is held before anything is evicted
    assert events.reasons("small-3") == ["RebalanceEvicted"]
    assert events.reasons("trainer") == ["RebalanceMoved"]
    assert _sample(metrics, "gputopo_rebalance_evictions_total") == 2.0
    assert _sample(metrics, "gputopo_rebalance_moves_total", mode="acting") == 1.0


def test_a_429_from_the_eviction_api_stops_the_move_and_is_reported() -> None:
    kube = FakeKube(_fragmented(_waiting("trainer", 8)), refuse=frozenset({"small-3"}))
    controller, events, metrics = _controller(kube, dry_run=False)
    report = controller.run_once()
    assert report.done == [] and [reason for _, reason in report.refused] == [DISRUPTION_BUDGET]
    assert kube.evicted() == ["small-3"]  # tried, refused; small-4 never tried
    # Nominated before the first eviction, cleared when the move stopped.
    assert kube.nominations() == [("trainer", "node-b"), ("trainer", None)]
    assert events.reasons("trainer") == ["RebalanceRefused"]
    assert "disruption budget" in events.recorded[-1][2]
    assert _sample(metrics, "gputopo_rebalance_refusals_total", reason=DISRUPTION_BUDGET) == 1.0


def test_a_pod_that_has_not_waited_long_enough_gets_no_move() -> None:
    kube = FakeKube(_fragmented(_waiting("trainer", 8, waited_s=10)))
    controller, events, _ = _controller(kube, dry_run=False, wait_s=300)
    report = controller.run_once()
    assert report.waiting == [] and kube.writes == [] and events.recorded == []


def test_a_pod_whose_node_is_being_freed_or_of_another_scheduler_is_left_alone() -> None:
    being_freed = _waiting("preempting", 8)
    being_freed["status"]["nominatedNodeName"] = "node-c"
    other = _waiting("other", 8)
    other["spec"]["schedulerName"] = "default-scheduler"
    reserved = _waiting("reserved", 8)
    reserved["status"]["nominatedNodeName"] = "node-a"  # a reservation: nothing terminating
    pods = [being_freed, other, _waiting("small", 1), reserved]
    found = waiting_pods(pods, RebalanceSettings(), NOW, busy_nodes={"node-c"})
    assert [key for key, _ in found] == ["default/reserved"]
    assert (
        waiting_pods(pods, RebalanceSettings(), NOW, {"node-c"}, moved={"default/reserved"}) == []
    )


def test_a_nominated_pod_holds_its_node_in_the_plan() -> None:
    nominated = _waiting("first", 8, waited_s=10)  # not waiting long enough to be planned for
    nominated["status"]["nominatedNodeName"] = "node-b"
    kube = FakeKube(_fragmented(nominated, _waiting("trainer", 8)))
    controller, _, _ = _controller(kube)
    report = controller.run_once()
    assert [m.frees for m in report.plan.moves] == ["node-c"]  # node-b is first's


def test_a_pod_a_reservation_holds_a_node_for_gets_a_move_and_a_new_nomination() -> None:
    trainer = _waiting("trainer", 8)
    trainer["status"]["nominatedNodeName"] = "node-a"  # waiting for big to finish, some day
    kube = FakeKube(_fragmented(trainer))
    controller, _, _ = _controller(kube, dry_run=False)
    assert [m.frees for m in controller.run_once().done] == ["node-b"]
    assert kube.nominations() == [("trainer", "node-b")]
    assert controller.run_once().plan.moves == []  # moved for lately: not again


def test_no_move_when_the_cluster_does_not_have_the_gpus() -> None:
    kube = FakeKube(_fragmented(_waiting("huge", 16)))
    controller, events, _ = _controller(kube, dry_run=False)
    report = controller.run_once()
    assert report.plan.moves == [] and kube.writes == [] and events.recorded == []
    assert [item.pod for item in report.plan.unresolved] == ["default/huge"]


def test_no_move_evicts_a_pod_of_equal_priority_or_an_opted_out_one() -> None:
    objects = _fragmented(_waiting("trainer", 8, priority=0))  # the small pods' own priority
    kube = FakeKube(objects)
    controller, _, _ = _controller(kube, dry_run=False)
    assert controller.run_once().plan.moves == [] and kube.writes == []
    opted = _fragmented(_waiting("trainer", 8))
    for obj in opted:
        if obj["kind"] == "Pod" and obj["metadata"]["name"].startswith("small"):
            obj["metadata"]["annotations"] = {"gputopo.io/rebalance": "never"}
    kube = FakeKube(opted)
    controller, _, _ = _controller(kube, dry_run=False)
    assert controller.run_once().plan.moves == [] and kube.writes == []


def test_a_terminating_pod_keeps_its_place_but_is_never_picked() -> None:
    objects = _fragmented(_waiting("trainer", 8))
    for obj in objects:
        if obj["metadata"]["name"] in ("small-3", "small-5"):
            obj["metadata"]["deletionTimestamp"] = _stamp(NOW)
    kube = FakeKube(objects)
    controller, _, _ = _controller(kube, dry_run=False)
    report = controller.run_once()
    assert report.plan.moves == [] and kube.writes == []


def test_the_cooldown_defers_the_next_move_with_one_event_then_lets_it_go() -> None:
    clock = Clock()
    kube = FakeKube(_fragmented(_waiting("trainer-1", 8), _waiting("trainer-2", 8, 500)))
    controller, events, metrics = _controller(
        kube, clock, dry_run=False, cooldown_s=120, evictions_per_minute=100
    )
    first = controller.run_once()
    assert [m.for_pod for m in first.done] == ["default/trainer-1"]
    assert [(m.for_pod, reason) for m, reason in first.deferred] == [
        ("default/trainer-2", COOLDOWN)
    ]
    # Next round trainer-1 is nominated (not planned for again); trainer-2 is still held.
    second = controller.run_once()
    assert [(m.for_pod, reason) for m, reason in second.deferred] == [
        ("default/trainer-2", COOLDOWN)
    ]
    assert events.reasons("trainer-2") == ["RebalanceDeferred"]  # told once
    assert _sample(metrics, "gputopo_rebalance_refusals_total", reason=COOLDOWN) == 2.0
    clock.now += 121
    third = controller.run_once()
    assert [m.frees for m in third.done] == ["node-c"]
    assert kube.nominations() == [("trainer-1", "node-b"), ("trainer-2", "node-c")]


def test_the_node_cooldown_holds_a_node_freed_a_moment_ago() -> None:
    clock = Clock()
    kube = FakeKube(_fragmented(_waiting("trainer", 8)))
    controller, _, _ = _controller(kube, clock, dry_run=False, cooldown_s=0, node_cooldown_s=600)
    (move,) = controller.run_once().done
    assert controller.limits.holds_back(move) == NODE_COOLDOWN
    clock.now += 601
    assert controller.limits.holds_back(move) is None


def test_the_token_bucket_refills_at_its_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(2, clock)
    assert bucket.allows(2)
    bucket.take(2)
    assert not bucket.allows(1)
    clock.now += 30
    assert bucket.allows(1) and not bucket.allows(2)
    clock.now += 600
    assert bucket.available() == 2  # a minute's worth at most
    bucket.take(5)  # a move larger than the bucket goes when it is full, leaving a debt
    clock.now += 60
    assert not bucket.allows(1)


def test_evictions_per_minute_defer_a_move_the_bucket_cannot_pay_for() -> None:
    clock = Clock()
    kube = FakeKube(_fragmented(_waiting("trainer-1", 8), _waiting("trainer-2", 8, 500)))
    controller, events, _ = _controller(
        kube, clock, dry_run=False, cooldown_s=0, evictions_per_minute=2
    )
    controller.run_once()
    second = controller.run_once()
    assert [reason for _, reason in second.deferred] == ["evictions-per-minute"]
    assert events.reasons("trainer-2") == ["RebalanceDeferred"]
    clock.now += 60
    assert [m.for_pod for m in controller.run_once().done] == ["default/trainer-2"]


def test_a_disruption_budget_without_room_keeps_its_pods() -> None:
    budget = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "small", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "small"}}, "minAvailable": 6},
        "status": {"disruptionsAllowed": 0},
    }
    kube = FakeKube(_fragmented(_waiting("trainer", 8), budget))
    controller, _, _ = _controller(kube, dry_run=False)
    report = controller.run_once()
    assert report.plan.moves == [] and kube.writes == []


def test_the_policy_limits_the_namespaces_evicted_from() -> None:
    kube = FakeKube(_fragmented(_waiting("trainer", 8)))
    policy = RebalancePolicy(namespaces=frozenset({"batch"}))
    controller, _, _ = _controller(kube, dry_run=False, policy=policy)
    assert controller.run_once().plan.moves == [] and kube.writes == []
