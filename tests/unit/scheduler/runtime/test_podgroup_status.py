"""PodGroup status writes: computed from the members, written once, only by the leader."""

from __future__ import annotations

import threading
from typing import Any

from gputopo.scheduler.gang import POD_GROUP_LABEL
from gputopo.scheduler.runtime.podgroup_status import PodGroupStatusWriter


class RecordingApi:
    def __init__(self) -> None:
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.wrote = threading.Event()

    def request(self, method: str, path: str, body: Any = None, **_: Any) -> dict[str, Any]:
        assert method == "PATCH"
        self.patches.append((path, body))
        self.wrote.set()
        return {}


class RecordingEvents:
    def __init__(self) -> None:
        self.notes: list[tuple[str, str]] = []

    def pod_group(self, pod_group: Any, event_type: str, reason: str, note: str) -> None:
        self.notes.append((reason, note))


def _member(name: str, node: str = "", phase: str = "Pending") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ml", "labels": {POD_GROUP_LABEL: "job"}},
        "spec": {"nodeName": node} if node else {},
        "status": {"phase": phase},
    }


def _writer(
    members: list[dict[str, Any]], leader: bool = True, stored: dict[str, Any] | None = None
) -> tuple[PodGroupStatusWriter, RecordingApi, RecordingEvents]:
    api, events = RecordingApi(), RecordingEvents()
    pod_group = {"metadata": {"name": "job", "namespace": "ml"}, "status": stored or {}}
    writer = PodGroupStatusWriter(
        api,  # type: ignore[arg-type]
        events,  # type: ignore[arg-type]
        pod_group=lambda key: pod_group,
        members=lambda key: members,
        holding=lambda key: 0,
        min_member=lambda key: 2,
        active=lambda: leader,
    )
    return writer, api, events


def test_status_is_patched_through_the_status_subresource_once_per_change() -> None:
    members = [_member("w-0", "n1", "Running"), _member("w-1", "n1", "Running")]
    writer, api, _ = _writer(members)
    writer.touch("ml/job")
    writer.close()
    assert len(api.patches) == 1
    path, body = api.patches[0]
    assert path == "/apis/scheduling.x-k8s.io/v1alpha1/namespaces/ml/podgroups/job/status"
    assert body["status"]["phase"] == "Running"
    assert body["status"]["running"] == 2
    assert body["status"]["conditions"][0]["status"] == "True"


def test_nothing_is_written_when_the_stored_status_already_says_it() -> None:
    members = [_member("w-0"), _member("w-1")]
    first, api, _ = _writer(members)
    first.touch("ml/job")
    first.close()
    stored = api.patches[0][1]["status"]
    again, api_again, _ = _writer(members, stored=stored)
    again.touch("ml/job")
    again.touch("ml/job")
    again.close()
    assert api_again.patches == []


def test_a_standby_never_writes() -> None:
    writer, api, _ = _writer([_member("w-0"), _member("w-1")], leader=False)
    writer.touch("ml/job")
    writer.close()
    assert api.patches == []


def test_turned_away_is_pending_with_the_reason_and_one_event_per_new_reason() -> None:
    writer, api, events = _writer([_member("w-0"), _member("w-1")])
    writer.turned_away("ml/job", "InsufficientResources", "resource gap: nvidia.com/gpu: 8")
    writer.turned_away("ml/job", "InsufficientResources", "resource gap: nvidia.com/gpu: 8")
    writer.close()
    assert events.notes == [("FailedScheduling", "resource gap: nvidia.com/gpu: 8")]
    status = api.patches[-1][1]["status"]
    assert status["phase"] == "Pending"
    condition = status["conditions"][0]
    assert (condition["status"], condition["reason"], condition["message"]) == (
        "False",
        "InsufficientResources",
        "resource gap: nvidia.com/gpu: 8",
    )


# -- Kubernetes' own PodGroup (scheduling.k8s.io) ------------------------------------------------

NATIVE_KEY = "scheduling.k8s.io/ml/job"
NATIVE_STATUS = "/apis/scheduling.k8s.io/v1beta1/namespaces/ml/podgroups/job/status"


def _native_member(name: str, node: str = "") -> dict[str, Any]:
    spec: dict[str, Any] = {"schedulingGroup": {"podGroupName": "job"}}
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": name, "namespace": "ml"}, "spec": spec, "status": {}}


def test_a_native_group_gets_only_kube_schedulers_condition_by_strategic_merge() -> None:
    members = [_native_member("w-0", "n1"), _native_member("w-1", "n1")]
    api = RecordingApi()
    sent: list[str] = []
    request = api.request

    def recording(method: str, path: str, body: Any = None, **kw: Any) -> dict[str, Any]:
        sent.append(str(kw.get("content_type")))
        return request(method, path, body)

    api.request = recording  # type: ignore[method-assign]
    writer = PodGroupStatusWriter(
        api,  # type: ignore[arg-type]
        RecordingEvents(),  # type: ignore[arg-type]
        pod_group=lambda key: {"metadata": {"name": "job", "namespace": "ml"}},
        members=lambda key: members,
        holding=lambda key: 0,
        min_member=lambda key: 2,
    )
    writer.touch(NATIVE_KEY)
    writer.close()
    assert [path for path, _ in api.patches] == [NATIVE_STATUS]
    assert sent == ["application/strategic-merge-patch+json"]
    status = api.patches[0][1]["status"]
    assert list(status) == ["conditions"]  # no Coscheduling phase or counts
    assert [(c["type"], c["status"]) for c in status["conditions"]] == [
        ("PodGroupInitiallyScheduled", "True")
    ]


def test_a_native_group_turned_away_is_unschedulable_and_one_being_tried_is_not_written() -> None:
    members = [_native_member("w-0"), _native_member("w-1")]
    api = RecordingApi()
    writer = PodGroupStatusWriter(
        api,  # type: ignore[arg-type]
        RecordingEvents(),  # type: ignore[arg-type]
        pod_group=lambda key: {"metadata": {"name": "job", "namespace": "ml"}},
        members=lambda key: members,
        holding=lambda key: 1,
        min_member=lambda key: 2,
    )
    writer.touch(NATIVE_KEY)
    writer.close()
    assert api.patches == []  # being tried: kube-scheduler writes no condition either
    writer = PodGroupStatusWriter(
        api,  # type: ignore[arg-type]
        RecordingEvents(),  # type: ignore[arg-type]
        pod_group=lambda key: {"metadata": {"name": "job", "namespace": "ml"}},
        members=lambda key: members,
        holding=lambda key: 0,
        min_member=lambda key: 2,
    )
    writer.turned_away(NATIVE_KEY, "NoDomain", "no nodes sharing one clique have room")
    writer.close()
    condition = api.patches[-1][1]["status"]["conditions"][0]
    assert (condition["status"], condition["reason"], condition["message"]) == (
        "False",
        "Unschedulable",
        "no nodes sharing one clique have room",
    )
