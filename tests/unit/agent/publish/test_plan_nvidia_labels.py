"""The ``--nvidia-labels`` modes and the conflict rule, planned against a Node whose managedFields
say who holds each label; and the writer over several cycles against a foreign writer that keeps
setting its own value (no write war, one Event, the conflict kept for the metric)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from gputopo.agent.publish.desired import DesiredState, PublishOptions
from gputopo.agent.publish.events import LABEL_CONFLICT_REASON, NodeEvents
from gputopo.agent.publish.plan import FIELD_MANAGER, NodeView, plan, plan_prune
from gputopo.agent.publish.writer import Publisher
from gputopo.core.contract import Contract, Gfd
from gputopo.core.kube import KubeApiError
from gputopo.core.retry import Backoff
from tests.unit.agent.machines import dgx_h100

C = Contract()
OURS = "NVIDIA-H100-80GB-HBM3"
THEIRS = "NVIDIA-H100-SXM5-80GB"


def desired(labels: dict[str, str]) -> DesiredState:
    return DesiredState(labels=labels, taints=(), annotations={}, sla_state=None)


def view(
    labels: dict[str, str],
    holders: dict[str, set[str]],
    claimed: str = "",
    pending: dict[str, int] | None = None,
) -> NodeView:
    annotations = {C.owned_labels_annotation: claimed} if claimed else {}
    if pending:
        annotations[C.pending_removal_annotation] = json.dumps(pending, separators=(",", ":"))
    mine = frozenset(k for k, managers in holders.items() if FIELD_MANAGER in managers)
    return NodeView(
        "n1",
        "7",
        labels,
        annotations,
        (),
        managed_labels=mine,
        managed_annotations=frozenset({C.owned_labels_annotation}),
        label_holders={k: frozenset(v) for k, v in holders.items()},
    )


def taken_by_gfd() -> NodeView:
    """gputopo wrote gpu.product; GFD (through nfd-master) then replaced the value."""
    return view({Gfd.GPU_PRODUCT: THEIRS}, {Gfd.GPU_PRODUCT: {"nfd-master"}}, Gfd.GPU_PRODUCT)


def test_a_key_gfd_took_is_left_alone_and_reported() -> None:
    want = desired({Gfd.GPU_PRODUCT: OURS})
    result = plan(taken_by_gfd(), want, C, removal_after=1, nvidia_labels="defer")
    assert result.empty, [c.describe() for c in result.changes]  # not even bookkeeping
    assert [(c.key, c.ours, c.theirs, c.holders) for c in result.conflicts] == [
        (Gfd.GPU_PRODUCT, OURS, THEIRS, ("nfd-master",))
    ]


def test_off_forgets_a_taken_key_and_leaves_the_label() -> None:
    result = plan(taken_by_gfd(), desired({}), C, removal_after=1, nvidia_labels="off")
    assert result.patch["metadata"] == {
        "resourceVersion": "7",
        "annotations": {C.owned_labels_annotation: None},
    }
    assert result.conflicts == ()


def test_off_drops_the_claim_on_a_taken_key_with_its_next_write_but_never_the_label() -> None:
    node = view(
        {Gfd.GPU_PRODUCT: THEIRS, C.sla: "1000"},
        {Gfd.GPU_PRODUCT: {"nfd-master"}, C.sla: {FIELD_MANAGER}},
        f"{Gfd.GPU_PRODUCT},{C.sla}",
    )
    result = plan(node, desired({C.sla: "990"}), C, removal_after=1, nvidia_labels="off")
    assert result.patch["metadata"]["labels"] == {C.sla: "990"}
    assert result.patch["metadata"]["annotations"][C.owned_labels_annotation] == C.sla


def test_own_corrects_an_overwrite_once_and_records_it() -> None:
    result = plan(taken_by_gfd(), desired({Gfd.GPU_PRODUCT: OURS}), C, 1, nvidia_labels="own")
    assert result.patch["metadata"]["labels"] == {Gfd.GPU_PRODUCT: OURS}
    pending = json.loads(result.patch["metadata"]["annotations"][C.pending_removal_annotation])
    assert pending == {f"corrected:{Gfd.GPU_PRODUCT}": 1}
    assert result.conflicts == ()
    # overwritten again: the record makes it a conflict, and nothing is written
    again = view(
        {Gfd.GPU_PRODUCT: THEIRS},
        {Gfd.GPU_PRODUCT: {"nfd-master"}},
        Gfd.GPU_PRODUCT,
        pending,
    )
    result = plan(again, desired({Gfd.GPU_PRODUCT: OURS}), C, 1, nvidia_labels="own")
    assert result.empty
    assert [c.key for c in result.conflicts] == [Gfd.GPU_PRODUCT]


@pytest.mark.parametrize("mode", ["own", "defer"])
def test_gputopos_own_prefix_is_always_set_back_without_a_record(mode: str) -> None:
    node = view({C.sla: "0"}, {C.sla: {"kubectl-label"}}, C.sla)
    result = plan(node, desired({C.sla: "1000"}), C, removal_after=1, nvidia_labels=mode)
    assert result.patch["metadata"]["labels"] == {C.sla: "1000"}
    assert C.pending_removal_annotation not in result.patch["metadata"].get("annotations", {})
    assert result.conflicts == ()


def test_a_key_held_together_is_updated_in_own_and_left_in_defer() -> None:
    node = view({Gfd.GPU_COUNT: "8"}, {Gfd.GPU_COUNT: {FIELD_MANAGER, "gfd-apply"}}, Gfd.GPU_COUNT)
    want = desired({Gfd.GPU_COUNT: "7"})
    owned = plan(node, want, C, removal_after=1, nvidia_labels="own")
    assert owned.patch["metadata"]["labels"] == {Gfd.GPU_COUNT: "7"}
    deferred = plan(node, want, C, removal_after=1, nvidia_labels="defer")
    assert deferred.empty
    assert [c.theirs for c in deferred.conflicts] == ["8"]


@pytest.mark.parametrize("mode", ["own", "defer", "off"])
def test_a_key_another_writer_set_first_is_never_written(mode: str) -> None:
    node = view({Gfd.GPU_PRODUCT: THEIRS}, {Gfd.GPU_PRODUCT: {"nfd-master"}})
    want = {Gfd.GPU_PRODUCT: OURS} if mode != "off" else {}
    result = plan(node, desired(want), C, removal_after=1, nvidia_labels=mode)
    assert "labels" not in result.patch.get("metadata", {})


@pytest.mark.parametrize("mode", ["own", "defer"])
def test_an_absent_key_is_written(mode: str) -> None:
    result = plan(view({}, {}), desired({Gfd.GPU_PRODUCT: OURS}), C, 1, nvidia_labels=mode)
    assert result.patch["metadata"]["labels"] == {Gfd.GPU_PRODUCT: OURS}
    assert result.patch["metadata"]["annotations"][C.owned_labels_annotation] == Gfd.GPU_PRODUCT


def test_off_removes_gputopos_own_nvidia_keys_after_the_removal_hysteresis() -> None:
    node = view(
        {Gfd.GPU_PRODUCT: OURS, C.sla: "1000"},
        {Gfd.GPU_PRODUCT: {FIELD_MANAGER}, C.sla: {FIELD_MANAGER}},
        f"{Gfd.GPU_PRODUCT},{C.sla}",
    )
    first = plan(node, desired({C.sla: "1000"}), C, removal_after=2, nvidia_labels="off")
    assert "labels" not in first.patch["metadata"]  # one miss counted, nothing removed yet
    pending = json.loads(first.patch["metadata"]["annotations"][C.pending_removal_annotation])
    second_view = view(
        node.labels,
        {Gfd.GPU_PRODUCT: {FIELD_MANAGER}, C.sla: {FIELD_MANAGER}},
        f"{Gfd.GPU_PRODUCT},{C.sla}",
        pending,
    )
    second = plan(second_view, desired({C.sla: "1000"}), C, removal_after=2, nvidia_labels="off")
    assert second.patch["metadata"]["labels"] == {Gfd.GPU_PRODUCT: None}


def test_prune_never_removes_a_label_another_writer_holds_too() -> None:
    node = view(
        {Gfd.GPU_COUNT: "8", Gfd.GPU_FAMILY: "hopper"},
        {Gfd.GPU_COUNT: {FIELD_MANAGER, "gfd-apply"}, Gfd.GPU_FAMILY: {FIELD_MANAGER}},
        f"{Gfd.GPU_COUNT},{Gfd.GPU_FAMILY}",
    )
    assert plan_prune(node, C).patch["metadata"]["labels"] == {Gfd.GPU_FAMILY: None}


# --- the writer over several cycles --------------------------------------------------------------


class UpdatingApiServer:
    """A Node behind merge patches, keeping managedFields as the API server does for updates:
    a label whose value a request changes (or adds) is held by that request's field manager
    alone; one it leaves as it is keeps its holders. Events are created once per name."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {
            "metadata": {
                "name": "n1",
                "uid": "uid-1",
                "resourceVersion": "1",
                "labels": {},
                "annotations": {},
                "managedFields": [],
            },
            "spec": {},
        }
        self.holders: dict[str, set[str]] = {}  # label key -> field managers
        self.annotation_holders: dict[str, set[str]] = {}
        self.patches: dict[str, int] = {}  # field manager -> patches
        self.events: dict[str, dict[str, Any]] = {}

    def read_node(self, name: str) -> dict[str, Any]:
        metadata = self.document["metadata"]
        fields: dict[str, dict[str, dict[str, Any]]] = {}
        for kind, holders in (("labels", self.holders), ("annotations", self.annotation_holders)):
            for key, managers in holders.items():
                for manager in managers:
                    fields.setdefault(manager, {}).setdefault(f"f:{kind}", {})[f"f:{key}"] = {}
        metadata["managedFields"] = [
            {"manager": manager, "operation": "Update", "fieldsV1": {"f:metadata": held}}
            for manager, held in sorted(fields.items())
        ]
        return copy.deepcopy(self.document)

    def patch_node(self, name: str, body: Any, *, field_manager: str = "", **_: Any) -> Any:
        self.patches[field_manager] = self.patches.get(field_manager, 0) + 1
        metadata = self.document["metadata"]
        for key, value in (body.get("metadata", {}).get("labels") or {}).items():
            if value is None:
                metadata["labels"].pop(key, None)
                self.holders.pop(key, None)
            elif metadata["labels"].get(key) != value:
                metadata["labels"][key] = value
                self.holders[key] = {field_manager}
        for key, value in (body.get("metadata", {}).get("annotations") or {}).items():
            if value is None:
                metadata["annotations"].pop(key, None)
                self.annotation_holders.pop(key, None)
            elif metadata["annotations"].get(key) != value:
                metadata["annotations"][key] = value
                self.annotation_holders[key] = {field_manager}
        if "spec" in body:
            self.document["spec"].update(body["spec"])
        metadata["resourceVersion"] = str(int(metadata["resourceVersion"]) + 1)
        return self.document

    def request(self, method: str, path: str, *, body: Any = None, decode: bool = True) -> Any:
        name = body["metadata"]["name"]
        if name in self.events:
            raise KubeApiError(method, path, 409, b'{"reason":"AlreadyExists"}', "Conflict")
        self.events[name] = body
        return None


def gfd_sets(server: UpdatingApiServer, value: str) -> None:
    server.patch_node("n1", {"metadata": {"labels": {Gfd.GPU_PRODUCT: value}}}, field_manager="nfd")


@pytest.mark.parametrize("mode", ["defer", "own"])
def test_no_write_war_with_a_foreign_writer_over_many_cycles_dgx_h100(mode: str) -> None:
    server = UpdatingApiServer()
    events = NodeEvents(server, "n1")
    publisher = Publisher(
        server,
        "n1",
        PublishOptions(nvidia_labels=mode),
        backoff=Backoff(max_attempts=1),
        events=events,
    )
    topology = dgx_h100()
    assert publisher.publish(topology).status == "written"
    assert server.document["metadata"]["labels"][Gfd.GPU_PRODUCT] == OURS
    gfd_sets(server, THEIRS)
    corrections = 1 if mode == "own" else 0
    for _ in range(corrections):  # own: the one correction, then GFD sets its value again
        assert publisher.publish(topology).status == "written"
        gfd_sets(server, THEIRS)
    writes_before = server.patches[FIELD_MANAGER]
    for cycle in range(6):
        assert publisher.publish(topology).status == "unchanged"
        gfd_sets(server, THEIRS if cycle % 2 else f"{THEIRS}-{cycle}")
    assert server.patches[FIELD_MANAGER] == writes_before  # zero writes after the conflict
    assert server.document["metadata"]["labels"][Gfd.GPU_PRODUCT].startswith(THEIRS)
    assert list(publisher.label_conflicts) == [Gfd.GPU_PRODUCT]
    assert publisher.label_conflicts[Gfd.GPU_PRODUCT].holders == ("nfd",)
    assert [e["reason"] for e in server.events.values()] == [LABEL_CONFLICT_REASON]
    event = next(iter(server.events.values()))
    assert event["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Node",
        "name": "n1",
        "uid": "uid-1",
    }
    assert event["type"] == "Warning" and Gfd.GPU_PRODUCT in event["message"]


def test_a_restarted_agent_does_not_repeat_the_event() -> None:
    server = UpdatingApiServer()
    first = Publisher(
        server, "n1", backoff=Backoff(max_attempts=1), events=NodeEvents(server, "n1")
    )
    first.publish(dgx_h100())
    gfd_sets(server, THEIRS)
    first.publish(dgx_h100())
    again = NodeEvents(server, "n1")
    second = Publisher(server, "n1", backoff=Backoff(max_attempts=1), events=again)
    assert second.publish(dgx_h100()).status == "unchanged"
    assert len(server.events) == 1 and again.created == 0
    assert list(second.label_conflicts) == [Gfd.GPU_PRODUCT]


def test_the_conflict_clears_when_the_other_writer_removes_its_label() -> None:
    server = UpdatingApiServer()
    publisher = Publisher(server, "n1", backoff=Backoff(max_attempts=1))
    publisher.publish(dgx_h100())
    gfd_sets(server, THEIRS)
    publisher.publish(dgx_h100())
    assert publisher.label_conflicts
    server.patch_node("n1", {"metadata": {"labels": {Gfd.GPU_PRODUCT: None}}}, field_manager="nfd")
    assert publisher.publish(dgx_h100()).status == "written"  # absent: gputopo's to fill in
    assert server.document["metadata"]["labels"][Gfd.GPU_PRODUCT] == OURS
    assert publisher.label_conflicts == {}
