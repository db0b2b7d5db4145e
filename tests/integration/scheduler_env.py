"""Shared helpers for the scheduler-runtime integration tests and benchmark (real API server).

The runtime under test runs as the ServiceAccount of `daemonset/scheduler`, with the RBAC from
that kustomization applied verbatim, so the tests also prove the manifests grant enough (and the
least privilege claimed in docs/scheduler-runtime.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from gputopo.scheduler.runtime.core_adapter import CoreFramework
from gputopo.scheduler.runtime.kube import JsonDict, KubeApi, KubeApiError
from gputopo.scheduler.runtime.runner import RuntimeConfig, SchedulerRuntime
from tests.controlplane import KWOK_NODE_ANNOTATION, ControlPlane

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "daemonset" / "scheduler"
SCHEDULER_NAMESPACE = "gputopo-system"
SERVICE_ACCOUNT = "gputopo-scheduler"
LEASE_NAME = "gputopo-scheduler"
GPU = "nvidia.com/gpu"


_COLLECTIONS = {
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
    "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
}


@contextlib.contextmanager
def scheduler_rbac(plane: ControlPlane, manifests: Path = MANIFESTS) -> Iterator[None]:
    """Apply daemonset/scheduler's ServiceAccount and RBAC (or those of ``manifests``, a
    component's folder); delete them afterwards."""
    admin = KubeApi(plane.admin)
    with contextlib.suppress(client.ApiException):
        plane.create_namespace(SCHEDULER_NAMESPACE)
    created: list[str] = []
    for file in ("serviceaccount.yaml", "rbac.yaml"):
        for document in yaml.safe_load_all((manifests / file).read_text()):
            if not document:
                continue
            document.setdefault("metadata", {})["namespace"] = SCHEDULER_NAMESPACE
            collection = _COLLECTIONS[document["kind"]].format(ns=SCHEDULER_NAMESPACE)
            try:
                admin.request("POST", collection, body=document)
            except KubeApiError as err:
                if err.status != 409:
                    raise
                admin.request("PUT", f"{collection}/{document['metadata']['name']}", body=document)
            created.append(f"{collection}/{document['metadata']['name']}")
    try:
        yield
    finally:
        for path in reversed(created):
            with contextlib.suppress(KubeApiError):
                admin.request("DELETE", path)


def service_account_api(plane: ControlPlane) -> KubeApi:
    """The scheduler's own identity: a TokenRequest token for gputopo-system/gputopo-scheduler."""
    return KubeApi(plane.client_for_service_account(SCHEDULER_NAMESPACE, SERVICE_ACCOUNT))


def gpu_node(
    name: str,
    gpus: int,
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    cpu: str = "64",
) -> JsonDict:
    """A Node kwok manages (annotation), with nvidia.com/gpu allocatable."""
    resources = {"cpu": cpu, "memory": "512Gi", "pods": "110", GPU: str(gpus)}
    node: JsonDict = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_NODE_ANNOTATION: "fake"},
            "labels": {"kubernetes.io/hostname": name, "type": "kwok", **(labels or {})},
        },
        "spec": {"taints": taints} if taints else {},
        "status": {"capacity": resources, "allocatable": resources},
    }
    return node


def gpu_container(gpus: int) -> JsonDict:
    """A pause container that requests (and is limited to) ``gpus`` whole GPUs and 100m CPU."""
    return {
        "name": "main",
        "image": "registry.k8s.io/pause:3.10",
        "resources": {
            "requests": {"cpu": "100m", GPU: str(gpus)},
            "limits": {GPU: str(gpus)},
        },
    }


def gpu_pod(
    name: str,
    gpus: int,
    scheduler_name: str = "gputopo-scheduler",
    node_selector: dict[str, str] | None = None,
    tolerations: list[dict[str, str]] | None = None,
    priority_class: str | None = None,
) -> JsonDict:
    spec: JsonDict = {
        "schedulerName": scheduler_name,
        "terminationGracePeriodSeconds": 0,
        "containers": [gpu_container(gpus)],
    }
    if node_selector:
        spec["nodeSelector"] = node_selector
    if tolerations:
        spec["tolerations"] = tolerations
    if priority_class:
        spec["priorityClassName"] = priority_class
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


class Cluster:
    """Admin-side helpers: create nodes and pods, read them back, delete what was created."""

    def __init__(self, plane: ControlPlane) -> None:
        self.api = KubeApi(plane.admin)
        self.nodes: list[str] = []

    def create_node(self, node: JsonDict) -> JsonDict:
        created = self.api.request("POST", "/api/v1/nodes", body=node)
        self.nodes.append(str(node["metadata"]["name"]))
        return created

    def delete_node(self, name: str) -> None:
        self.api.request("DELETE", f"/api/v1/nodes/{name}")
        if name in self.nodes:
            self.nodes.remove(name)

    def delete_nodes(self) -> None:
        for name in list(self.nodes):
            with contextlib.suppress(KubeApiError):
                self.delete_node(name)

    def create_pod(self, namespace: str, pod: JsonDict) -> JsonDict:
        return self.api.request("POST", f"/api/v1/namespaces/{namespace}/pods", body=pod)

    def pod(self, namespace: str, name: str) -> JsonDict:
        return self.api.request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")

    def pods(self, namespace: str) -> list[JsonDict]:
        items = self.api.request("GET", f"/api/v1/namespaces/{namespace}/pods").get("items")
        return list(items or [])

    def node_of(self, namespace: str, name: str) -> str:
        return str(self.pod(namespace, name).get("spec", {}).get("nodeName") or "")

    def bind(self, namespace: str, name: str, node: str) -> None:
        self.api.bind(namespace, name, "", node)

    def events(self, namespace: str, pod: str | None = None) -> list[JsonDict]:
        items = self.api.request(
            "GET", f"/apis/events.k8s.io/v1/namespaces/{namespace}/events"
        ).get("items")
        return [
            event
            for event in items or []
            if pod is None or event.get("regarding", {}).get("name") == pod
        ]

    def lease(self) -> JsonDict:
        return self.api.request(
            "GET",
            f"/apis/coordination.k8s.io/v1/namespaces/{SCHEDULER_NAMESPACE}/leases/{LEASE_NAME}",
        )


def pod_scheduled_condition(pod: JsonDict) -> dict[str, Any] | None:
    for condition in pod.get("status", {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled":
            return dict(condition)
    return None


@contextlib.contextmanager
def running_runtime(
    plane: ControlPlane, framework: CoreFramework | None = None, **config_fields: Any
) -> Iterator[SchedulerRuntime]:
    """The scheduler runtime acting as its ServiceAccount (the manifests' RBAC), watches synced,
    no lease and no metrics server (``config_fields`` override RuntimeConfig's other fields;
    ``framework`` defaults to the default profile's); stopped afterwards."""
    with scheduler_rbac(plane):
        config = RuntimeConfig(lease=None, metrics_address=None, **config_fields)
        runtime = SchedulerRuntime(service_account_api(plane), framework or CoreFramework(), config)
        runtime.start()
        try:
            assert runtime.wait_synced(30), "runtime watches never synced"
            yield runtime
        finally:
            runtime.stop()
