"""The extender's bind: only the pod the caller named, unbound, to a node gputopo's filters pass."""

from __future__ import annotations

from typing import Any

import pytest

from gputopo.scheduler.extender import BindingRequest, Extender
from gputopo.scheduler.runtime.core_adapter import CoreFramework

GPU = "nvidia.com/gpu"
CONTROL_PLANE_TAINT = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}


def _node(name: str, gpus: int, taints: list[dict[str, str]] | None = None) -> dict[str, Any]:
    allocatable = {"cpu": "64", "memory": "512Gi", "pods": "110", GPU: str(gpus)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {"taints": taints or []},
        "status": {"capacity": allocatable, "allocatable": allocatable},
    }


def _pod(gpus: int, node_name: str = "") -> dict[str, Any]:
    resources = {"cpu": "1", GPU: str(gpus)}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "tenant", "namespace": "ml", "uid": "uid-tenant"},
        "spec": {
            "containers": [{"name": "main", "resources": {"requests": resources}}],
            **({"nodeName": node_name} if node_name else {}),
        },
        "status": {"phase": "Pending"},
    }


def _extender(pod: dict[str, Any]) -> tuple[Extender, list[tuple[str, ...]]]:
    framework = CoreFramework()
    framework.upsert_node(_node("gpu-node", 8))
    framework.upsert_node(_node("control-plane", 8, taints=[CONTROL_PLANE_TAINT]))
    framework.upsert_node(_node("cpu-only", 0))
    calls: list[tuple[str, ...]] = []
    return Extender(framework, binder=lambda *a: calls.append(a), pod_reader=lambda *_: pod), calls


def _bind(extender: Extender, node: str, uid: str = "uid-tenant") -> str:
    request = BindingRequest("tenant", "ml", uid, node)
    error: str = extender.bind(request)["Error"]
    return error


def test_bind_to_a_node_that_passes_the_filters_is_made() -> None:
    extender, calls = _extender(_pod(gpus=4))
    assert _bind(extender, "gpu-node") == ""
    assert calls == [("ml", "tenant", "uid-tenant", "gpu-node")]


@pytest.mark.parametrize(
    ("node", "reason"),
    [
        ("control-plane", "had untolerated taint {node-role.kubernetes.io/control-plane: }"),
        ("cpu-only", "Insufficient nvidia.com/gpu"),
        ("no-such-node", "node(s) not yet in gputopo's cache"),
    ],
)
def test_a_forged_bind_to_a_node_the_filters_refuse_binds_nothing(node: str, reason: str) -> None:
    extender, calls = _extender(_pod(gpus=4))
    error = _bind(extender, node)
    assert error.startswith(f"bind ml/tenant to {node}: the node fails gputopo's filters: ")
    assert reason in error
    assert calls == []


def test_a_bind_naming_another_uid_or_an_already_bound_pod_binds_nothing() -> None:
    extender, calls = _extender(_pod(gpus=4))
    assert _bind(extender, "gpu-node", uid="uid-other") == (
        "bind ml/tenant to gpu-node: the pod's UID is 'uid-tenant', not 'uid-other'"
    )
    bound, bound_calls = _extender(_pod(gpus=4, node_name="gpu-node"))
    assert _bind(bound, "gpu-node") == (
        "bind ml/tenant to gpu-node: the pod is already bound to gpu-node"
    )
    assert calls == bound_calls == []


def test_a_pod_the_api_cannot_show_is_not_bound() -> None:
    def missing(namespace: str, name: str) -> dict[str, Any]:
        raise LookupError(f"404 pods {name!r} not found")

    calls: list[tuple[str, ...]] = []
    extender = Extender(CoreFramework(), binder=lambda *a: calls.append(a), pod_reader=missing)
    assert _bind(extender, "gpu-node") == (
        "bind ml/tenant to gpu-node: reading the pod: 404 pods 'tenant' not found"
    )
    assert calls == []
