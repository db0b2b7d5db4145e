"""The shipped admission policy for DeviceTaintRules on the real API server: two agents, each
as the agent's ServiceAccount with its token bound to a Pod on its own Node; each may taint one
named device of its own node's pool with gputopo's health key, and nothing of the other's."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.controlplane import ClusterObjects, ControlPlane
from tests.integration.test_publisher import (  # noqa: F401  (fixtures)
    agent_bound_to,
    agent_rbac_and_policy,
    eventually_denied,
)

pytestmark = pytest.mark.integration

GROUP, VERSION, PLURAL = "resource.k8s.io", "v1", "devicetaintrules"
OWN_POOL_ONLY = "may only taint devices in the pool of its own node"


def rule(name: str, pool: str | None, **changes: Any) -> dict[str, Any]:
    selector: dict[str, Any] = {"driver": "gpu.nvidia.com", "device": "gpu-0"}
    if pool is not None:
        selector["pool"] = pool
    selector.update(changes.pop("selector", {}))
    taint = {"key": "gputopo.io/gpu-health", "value": "failed", "effect": "NoSchedule"}
    taint.update(changes.pop("taint", {}))
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DeviceTaintRule",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "gputopo-agent"}},
        "spec": {"deviceSelector": selector, "taint": taint},
    }


def create(api: client.ApiClient, body: dict[str, Any]) -> Any:
    return client.CustomObjectsApi(api).create_cluster_custom_object(GROUP, VERSION, PLURAL, body)


def patch(api: client.ApiClient, name: str, body: dict[str, Any]) -> Any:
    return client.CustomObjectsApi(api).patch_cluster_custom_object(
        GROUP, VERSION, PLURAL, name, body
    )


def delete(api: client.ApiClient, name: str) -> Any:
    return client.CustomObjectsApi(api).delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)


def denied(action: Callable[[], Any]) -> str:
    with pytest.raises(client.ApiException) as error:
        action()
    assert error.value.status in (403, 422), error.value
    return str(error.value.body)


@pytest.fixture
def two_agents(
    agent_rbac_and_policy: None,  # noqa: F811
    control_plane: ControlPlane,
    cluster_objects: ClusterObjects,
    kube_admin: client.ApiClient,
) -> Iterator[tuple[tuple[client.ApiClient, str], tuple[client.ApiClient, str]]]:
    """((agent on node A, A), (agent on node B, B)), the policy already in force."""
    suffix = uuid.uuid4().hex[:6]
    names = (f"taint-a-{suffix}", f"taint-b-{suffix}")
    for name in names:
        cluster_objects.create_node(
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}
        )
    with contextlib.ExitStack() as stack:
        agent_a = stack.enter_context(agent_bound_to(control_plane, kube_admin, names[0]))
        agent_b = stack.enter_context(agent_bound_to(control_plane, kube_admin, names[1]))
        probe = f"probe-{suffix}"
        eventually_denied(
            lambda: create(agent_a, rule(probe, names[1])),
            lambda: delete(kube_admin, probe),
        )
        try:
            yield (agent_a, names[0]), (agent_b, names[1])
        finally:
            listed = client.CustomObjectsApi(kube_admin).list_cluster_custom_object(
                GROUP, VERSION, PLURAL
            )
            for item in listed["items"]:
                if item["metadata"]["name"].endswith(suffix):
                    with contextlib.suppress(client.ApiException):
                        delete(kube_admin, item["metadata"]["name"])


def test_an_agent_taints_creates_changes_and_deletes_a_device_of_its_own_pool(
    two_agents: tuple[tuple[client.ApiClient, str], tuple[client.ApiClient, str]],
) -> None:
    (agent, node), _ = two_agents
    name = f"own-{node}"

    create(agent, rule(name, node))
    patch(agent, name, {"spec": {"taint": {"effect": "NoExecute", "value": "reset-required"}}})
    assert client.CustomObjectsApi(agent).list_cluster_custom_object(GROUP, VERSION, PLURAL)
    delete(agent, name)


def test_an_agent_may_not_taint_a_device_of_another_nodes_pool(
    two_agents: tuple[tuple[client.ApiClient, str], tuple[client.ApiClient, str]],
) -> None:
    (agent_a, node_a), (_, node_b) = two_agents

    message = denied(lambda: create(agent_a, rule(f"other-{node_a}", node_b)))

    assert OWN_POOL_ONLY in message and node_b in message


def test_an_agent_may_not_change_move_or_delete_another_agents_rule(
    two_agents: tuple[tuple[client.ApiClient, str], tuple[client.ApiClient, str]],
) -> None:
    (agent_a, node_a), (agent_b, node_b) = two_agents
    theirs, mine = f"theirs-{node_b}", f"mine-{node_a}"
    create(agent_b, rule(theirs, node_b))
    create(agent_a, rule(mine, node_a))

    assert OWN_POOL_ONLY in denied(
        lambda: patch(agent_a, theirs, {"spec": {"taint": {"effect": "None"}}})
    )
    assert "take over" in denied(
        lambda: patch(agent_a, theirs, {"spec": {"deviceSelector": {"pool": node_a}}})
    )
    assert OWN_POOL_ONLY in denied(lambda: delete(agent_a, theirs))
    assert OWN_POOL_ONLY in denied(
        lambda: patch(agent_a, mine, {"spec": {"deviceSelector": {"pool": node_b}}})
    )


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"pool": None}, OWN_POOL_ONLY),  # no pool: every pool of the driver
        ({"selector": {"device": None}}, "one named device"),  # the whole pool
        ({"selector": {"driver": "nic.example.com"}}, "one named device of driver"),
        ({"taint": {"key": "example.com/broken"}}, "may only set the taint"),
    ],
)
def test_an_agent_may_not_widen_the_rule_or_use_another_taint(
    two_agents: tuple[tuple[client.ApiClient, str], tuple[client.ApiClient, str]],
    changes: dict[str, Any],
    says: str,
) -> None:
    (agent, node), _ = two_agents
    changes = dict(changes)
    pool = node if "pool" not in changes else changes.pop("pool")
    body = rule(f"wide-{node}", pool, **changes)
    selector = body["spec"]["deviceSelector"]
    for key in [k for k, v in selector.items() if v is None]:
        del selector[key]

    assert says in denied(lambda: create(agent, body))
