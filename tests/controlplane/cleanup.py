"""Cluster-scoped objects a test creates are deleted after it (namespaces isolate the rest)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubernetes import client

_Deleter = Callable[[client.ApiClient, str], object]
_Creator = Callable[[client.ApiClient, Any], Any]

_DELETERS: dict[str, _Deleter] = {
    "Node": lambda api, name: client.CoreV1Api(api).delete_node(name),
    "Namespace": lambda api, name: client.CoreV1Api(api).delete_namespace(name),
    "PersistentVolume": lambda api, name: client.CoreV1Api(api).delete_persistent_volume(name),
    "ClusterRole": lambda api, name: client.RbacAuthorizationV1Api(api).delete_cluster_role(name),
    "ClusterRoleBinding": lambda api, name: client.RbacAuthorizationV1Api(
        api
    ).delete_cluster_role_binding(name),
    "PriorityClass": lambda api, name: client.SchedulingV1Api(api).delete_priority_class(name),
    "CustomResourceDefinition": lambda api, name: client.ApiextensionsV1Api(
        api
    ).delete_custom_resource_definition(name),
    "ValidatingAdmissionPolicy": lambda api, name: client.AdmissionregistrationV1Api(
        api
    ).delete_validating_admission_policy(name),
    "ValidatingAdmissionPolicyBinding": lambda api, name: client.AdmissionregistrationV1Api(
        api
    ).delete_validating_admission_policy_binding(name),
}

_CREATORS: dict[str, _Creator] = {
    "Node": lambda api, body: client.CoreV1Api(api).create_node(body),
    "Namespace": lambda api, body: client.CoreV1Api(api).create_namespace(body),
    "PersistentVolume": lambda api, body: client.CoreV1Api(api).create_persistent_volume(body),
    "ClusterRole": lambda api, body: client.RbacAuthorizationV1Api(api).create_cluster_role(body),
    "ClusterRoleBinding": lambda api, body: client.RbacAuthorizationV1Api(
        api
    ).create_cluster_role_binding(body),
    "PriorityClass": lambda api, body: client.SchedulingV1Api(api).create_priority_class(body),
    "CustomResourceDefinition": lambda api, body: client.ApiextensionsV1Api(
        api
    ).create_custom_resource_definition(body),
    "ValidatingAdmissionPolicy": lambda api, body: client.AdmissionregistrationV1Api(
        api
    ).create_validating_admission_policy(body),
    "ValidatingAdmissionPolicyBinding": lambda api, body: client.AdmissionregistrationV1Api(
        api
    ).create_validating_admission_policy_binding(body),
}


def _name_of(body: Any) -> str:
    metadata = body["metadata"] if isinstance(body, dict) else body.metadata
    name = metadata["name"] if isinstance(metadata, dict) else metadata.name
    return str(name)


class ClusterObjects:
    """Creates cluster-scoped objects as admin and deletes them, newest first, at teardown."""

    KINDS = tuple(_CREATORS)

    def __init__(self, admin: client.ApiClient) -> None:
        self.admin = admin
        self._tracked: list[tuple[str, str, _Deleter]] = []

    def create(self, kind: str, body: Any) -> Any:
        """Create `body` (a model object or a dict) of `kind` and remember to delete it."""
        if kind not in _CREATORS:
            raise ValueError(f"ClusterObjects.create: kind {kind!r} is not one of {self.KINDS}")
        created = _CREATORS[kind](self.admin, body)
        self.track(kind, _name_of(body))
        return created

    def create_node(self, body: client.V1Node | dict[str, Any]) -> client.V1Node:
        node: client.V1Node = self.create("Node", body)
        return node

    def create_kubelet_node(self, name: str) -> str:
        """A Node as the kubelet registers one: its name and hostname label, nothing else."""
        self.create_node(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                "spec": {},
            }
        )
        return name

    def track(self, kind: str, name: str, deleter: _Deleter | None = None) -> None:
        """Delete `name` of `kind` at teardown; pass `deleter` for kinds not listed above."""
        chosen = deleter or _DELETERS.get(kind)
        if chosen is None:
            raise ValueError(f"ClusterObjects.track: no deleter for kind {kind!r}; pass one")
        self._tracked.append((kind, name, chosen))

    def cleanup(self) -> list[str]:
        """Delete everything tracked; returns 'Kind/name: error' for what could not be deleted."""
        problems: list[str] = []
        while self._tracked:
            kind, name, deleter = self._tracked.pop()
            try:
                deleter(self.admin, name)
            except client.ApiException as error:
                if error.status != 404:
                    problems.append(f"{kind}/{name}: {error.status} {error.reason}")
        return problems
