"""Differential test: gputopo's filters against the real kube-scheduler on generated clusters.

Hypothesis generates small clusters (3-6 nodes with labels, taints, allocatable including
nvidia.com/gpu, some existing load) and one pod (requests, nodeSelector, required node
affinity, tolerations including KEP-5471's Gt/Lt). The cluster is created in the real API
server, kube-scheduler places the pod, and gputopo evaluates the same pod offline on a snapshot
read back from the same API server. They must agree:

* kube-scheduler found no node  <=>  gputopo's filters leave no feasible node;
* the node kube-scheduler picked is feasible for gputopo;
* when neither can place the pod, kube-scheduler's message starts with gputopo's
  ("0/N nodes are available: ..."; kube-scheduler appends its preemption verdict).

Scores are not compared: kube-scheduler breaks ties at random, so only feasibility is a fact.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from gputopo.scheduler.framework import schedule_one
from gputopo.scheduler.model import parse_pod
from gputopo.scheduler.runtime.kube import JsonDict, KubeApi, KubeApiError
from gputopo.scheduler.snapshot import ClusterSnapshot
from tests.controlplane import ControlPlane, ManagedProcess
from tests.integration.scheduler_env import pod_scheduled_condition
from tests.polling import eventually

pytestmark = pytest.mark.integration

GPU = "nvidia.com/gpu"
ZONE = "topology.kubernetes.io/zone"
PRODUCT = "nvidia.com/gpu.product"
GPU_COUNT = "nvidia.com/gpu.count"
NVLINK = "gputopo.io/nvlink-domain-size"
LABEL_VALUES: dict[str, list[str]] = {
    ZONE: ["zone-a", "zone-b"],
    PRODUCT: ["NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB"],
    GPU_COUNT: ["0", "4", "8"],
    NVLINK: ["1", "4", "8"],
}
NUMERIC_KEYS = [GPU_COUNT, NVLINK]
TAINTS: list[tuple[str, str]] = [
    ("gputopo.io/sla", "900"),
    ("gputopo.io/sla", "960"),
    ("dedicated", "ml"),
    ("gputopo.io/gpu-health", "degraded"),
]
EFFECTS = ["NoSchedule", "PreferNoSchedule", "NoExecute"]

_example = itertools.count()


# -- strategies -------------------------------------------------------------------------------

labels_st = st.dictionaries(st.sampled_from(sorted(LABEL_VALUES)), st.none(), max_size=4).flatmap(
    lambda keys: st.fixed_dictionaries({key: st.sampled_from(LABEL_VALUES[key]) for key in keys})
)

taint_st = st.tuples(st.sampled_from(TAINTS), st.sampled_from(EFFECTS)).map(
    lambda t: {"key": t[0][0], "value": t[0][1], "effect": t[1]}
)


@st.composite
def node_st(draw: st.DrawFn) -> JsonDict:
    taints = draw(st.lists(taint_st, max_size=2, unique_by=lambda t: (t["key"], t["effect"])))
    allocatable = {
        "cpu": draw(st.sampled_from(["4", "16", "64"])),
        "memory": draw(st.sampled_from(["16Gi", "256Gi"])),
        "pods": draw(st.sampled_from(["2", "110"])),
        GPU: draw(st.sampled_from(["0", "1", "2", "4", "8"])),
    }
    spec: JsonDict = {"taints": taints} if taints else {}
    if draw(st.integers(0, 9)) == 0:
        spec["unschedulable"] = True
    return {
        "labels": draw(labels_st),
        "spec": spec,
        "allocatable": allocatable,
        "load_gpus": draw(st.sampled_from([0, 0, 1, 2, 4])),
    }


@st.composite
def requirement_st(draw: st.DrawFn) -> JsonDict:
    operator = draw(st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]))
    if operator in ("Gt", "Lt"):
        key = draw(st.sampled_from(NUMERIC_KEYS))
        return {
            "key": key,
            "operator": operator,
            "values": [draw(st.sampled_from(["0", "3", "7"]))],
        }
    key = draw(st.sampled_from(sorted(LABEL_VALUES)))
    if operator in ("Exists", "DoesNotExist"):
        return {"key": key, "operator": operator}
    values = draw(st.lists(st.sampled_from(LABEL_VALUES[key]), min_size=1, max_size=2, unique=True))
    return {"key": key, "operator": operator, "values": values}


@st.composite
def toleration_st(draw: st.DrawFn) -> JsonDict:
    key, value = draw(st.sampled_from(TAINTS))
    operator = draw(st.sampled_from(["Equal", "Exists", "Gt", "Lt"]))
    toleration: JsonDict = {"key": key, "operator": operator}
    if draw(st.booleans()):
        toleration["effect"] = draw(st.sampled_from(EFFECTS))
    if operator == "Equal":
        toleration["value"] = value
    elif operator in ("Gt", "Lt"):
        toleration["key"] = "gputopo.io/sla"
        toleration["value"] = draw(st.sampled_from(["850", "950", "1000"]))
        toleration.setdefault("effect", "NoSchedule")
    if operator == "Exists" and draw(st.integers(0, 4)) == 0:
        del toleration["key"]  # tolerate everything
    return toleration


@st.composite
def pod_st(draw: st.DrawFn) -> JsonDict:
    spec: JsonDict = {
        "schedulerName": "default-scheduler",
        "terminationGracePeriodSeconds": 0,
        "containers": [
            {
                "name": "main",
                "image": "registry.k8s.io/pause:3.10",
                "resources": {
                    "requests": {"cpu": draw(st.sampled_from(["100m", "2", "8"]))},
                    "limits": {},
                },
            }
        ],
    }
    gpus = draw(st.sampled_from(["0", "1", "2", "4", "8"]))
    if gpus != "0":
        spec["containers"][0]["resources"]["requests"][GPU] = gpus
        spec["containers"][0]["resources"]["limits"][GPU] = gpus
    selector = draw(labels_st.filter(lambda labels: len(labels) <= 1))
    if selector:
        spec["nodeSelector"] = selector
    if draw(st.booleans()):
        terms = draw(
            st.lists(
                st.lists(requirement_st(), min_size=1, max_size=2).map(
                    lambda reqs: {"matchExpressions": reqs}
                ),
                min_size=1,
                max_size=2,
            )
        )
        spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
            }
        }
    tolerations = draw(st.lists(toleration_st(), max_size=2))
    if tolerations:
        spec["tolerations"] = tolerations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "candidate"}, "spec": spec}


scenario_st = st.tuples(st.lists(node_st(), min_size=3, max_size=6), pod_st())


# -- the test ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def admin_api(control_plane: ControlPlane, kube_scheduler: ManagedProcess) -> KubeApi:
    return KubeApi(control_plane.admin)


@pytest.fixture(scope="module")
def diff_namespace(control_plane: ControlPlane) -> Any:
    name = control_plane.create_namespace(f"differential-{int(time.time())}")
    yield name
    control_plane.delete_namespace(name)


def _create_scenario(api: KubeApi, namespace: str, run: int, nodes: list[JsonDict]) -> list[str]:
    names = []
    for index, node in enumerate(nodes):
        name = f"diff-{run}-{index}"
        allocatable = node["allocatable"]
        api.request(
            "POST",
            "/api/v1/nodes",
            body={
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "labels": {"kubernetes.io/hostname": name, **node["labels"]},
                },
                "spec": node["spec"],
                "status": {"capacity": allocatable, "allocatable": allocatable},
            },
        )
        names.append(name)
    for name, node in zip(names, nodes, strict=True):
        if node["load_gpus"]:
            api.request(
                "POST",
                f"/api/v1/namespaces/{namespace}/pods",
                body={
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": f"load-{name}"},
                    "spec": {
                        "nodeName": name,
                        "terminationGracePeriodSeconds": 0,
                        "tolerations": [{"operator": "Exists"}],
                        "containers": [
                            {
                                "name": "load",
                                "image": "registry.k8s.io/pause:3.10",
                                "resources": {
                                    "requests": {GPU: str(node["load_gpus"])},
                                    "limits": {GPU: str(node["load_gpus"])},
                                },
                            }
                        ],
                    },
                },
            )
    return names


def _clean(api: KubeApi, namespace: str, nodes: list[str]) -> None:
    with contextlib.suppress(KubeApiError):
        api.request(
            "DELETE",
            f"/api/v1/namespaces/{namespace}/pods",
            query={"gracePeriodSeconds": 0},
        )
    for name in nodes:
        with contextlib.suppress(KubeApiError):
            api.request("DELETE", f"/api/v1/nodes/{name}")
    eventually(
        lambda: not api.request("GET", f"/api/v1/namespaces/{namespace}/pods").get("items"),
        20,
        "the scenario's pods to be gone",
    )


def _offline_snapshot(api: KubeApi) -> ClusterSnapshot:
    """What gputopo would see: every Node, Namespace and bound Pod in the API server now."""
    snapshot = ClusterSnapshot()
    for node in api.request("GET", "/api/v1/nodes").get("items") or []:
        snapshot.add_node(node)
    for namespace in api.request("GET", "/api/v1/namespaces").get("items") or []:
        snapshot.add_namespace(namespace)
    for pod in api.request("GET", "/api/v1/pods").get("items") or []:
        if pod["spec"].get("nodeName"):
            snapshot.add_pod(pod)
    return snapshot


_TAINT_REASON = re.compile(r"^node\(s\) had untolerated taint \{.*\}$")


def kube_wording(message: str) -> str:
    """gputopo's message as kube-scheduler v1.37 words it.

    The one intended difference (docs/scheduling.md, "Differences"): gputopo names the taint
    ("had untolerated taint {gputopo.io/sla: 900}", the older kube-scheduler wording users
    asked for), while kube-scheduler v1.37 says "had untolerated taint(s)" and so counts all
    taint failures under one reason. Everything else must be word for word.
    """
    head, sep, body = message.partition(": ")
    if not sep:
        return message
    counts: dict[str, int] = {}
    for entry in body.rstrip(".").split(", "):
        count, _, reason = entry.partition(" ")
        reason = "node(s) had untolerated taint(s)" if _TAINT_REASON.match(reason) else reason
        counts[reason] = counts.get(reason, 0) + int(count)
    return f"{head}: " + ", ".join(sorted(f"{n} {r}" for r, n in counts.items())) + "."


def _kube_verdict(api: KubeApi, namespace: str, node_count: int) -> tuple[str, str] | None:
    pod = api.request("GET", f"/api/v1/namespaces/{namespace}/pods/candidate")
    if pod["spec"].get("nodeName"):
        return ("bound", str(pod["spec"]["nodeName"]))
    condition = pod_scheduled_condition(pod)
    if condition and condition.get("reason") == "Unschedulable":
        message = str(condition.get("message", ""))
        # Only a verdict on the whole scenario counts (not one taken before all nodes arrived).
        if message.startswith(f"0/{node_count} nodes"):
            return ("unschedulable", message)
    return None


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    print_blob=True,
)
@given(scenario=scenario_st)
def test_gputopo_filters_agree_with_kube_scheduler(
    admin_api: KubeApi, diff_namespace: str, scenario: tuple[list[JsonDict], JsonDict]
) -> None:
    nodes, pod = scenario
    api, namespace = admin_api, diff_namespace
    run = next(_example)
    names = _create_scenario(api, namespace, run, nodes)
    try:
        foreign = len(api.request("GET", "/api/v1/nodes").get("items") or []) - len(names)
        # Let kube-scheduler's informers see the nodes and the load before the pod arrives.
        time.sleep(0.3)
        api.request("POST", f"/api/v1/namespaces/{namespace}/pods", body=pod)
        verdict = eventually(
            lambda: _kube_verdict(api, namespace, len(names) + foreign), 20, "kube-scheduler"
        )
        created = api.request("GET", f"/api/v1/namespaces/{namespace}/pods/candidate")
        snapshot = _offline_snapshot(api)
        if verdict[0] == "bound":
            snapshot.remove_pod(f"{namespace}/candidate")
            created["spec"].pop("nodeName", None)
        result = schedule_one(parse_pod(created), snapshot)
        diagnosis = result.diagnosis()
        event(f"kube-scheduler: {verdict[0]}")
        feasible = sorted(name for name, d in diagnosis.items() if d.feasible)
        note(f"kube-scheduler: {verdict}; gputopo feasible: {feasible}; message: {result.message}")
        note(f"reasons: { {n: d.reasons for n, d in diagnosis.items() if not d.feasible} }")
        if verdict[0] == "bound":
            assert verdict[1] in feasible, (
                f"kube-scheduler bound to {verdict[1]}, which gputopo rejects: "
                f"{diagnosis[verdict[1]].reasons}"
            )
        else:
            assert feasible == [], f"kube-scheduler found no node; gputopo accepts {feasible}"
            assert verdict[1].startswith(kube_wording(result.message)), (
                verdict[1],
                result.message,
            )
    finally:
        _clean(api, namespace, names)
