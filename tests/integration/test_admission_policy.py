"""The shipped admission policy on the real API server: as the agent's ServiceAccount on its own
Node, every probe of issue 16 is denied, and the agent's normal publish is still allowed.

The Node looks like a GPU Operator node: GFD owns ``nvidia.com/gpu.product``, the operator's
``nvidia.com/gpu`` taint is set, and both have their own field managers in managedFields.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from gputopo.agent.publish.desired import PublishOptions
from gputopo.agent.publish.writer import Publisher
from gputopo.core.contract import Contract, Gfd
from tests.controlplane import ClusterObjects, ControlPlane
from tests.integration.test_publisher import (  # noqa: F401  (fixtures)
    AGENT_NAMESPACE,
    agent_bound_to,
    agent_client,
    agent_rbac_and_policy,
    eventually_denied,
    fast_backoff,
    labels_of,
    read_node,
    taints_of,
)
from tests.unit.agent.machines import degraded, dgx_h100

pytestmark = pytest.mark.integration

C = Contract()
MERGE = "application/merge-patch+json"
OPERATOR_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
GFD_PRODUCT = "NVIDIA-H100-From-GFD"


def patch_as(api: client.ApiClient, name: str, body: Any, manager: str | None = None) -> Any:
    kwargs = {"field_manager": manager} if manager else {}
    return client.CoreV1Api(api).patch_node(name, body, _content_type=MERGE, **kwargs)


@pytest.fixture
def agent_on_gpu_node(
    agent_rbac_and_policy: None,  # noqa: F811
    control_plane: ControlPlane,
    cluster_objects: ClusterObjects,
    kube_admin: client.ApiClient,
) -> Iterator[tuple[client.ApiClient, str]]:
    """(agent client whose token is bound to a Pod on the Node, the Node's name)."""
    name = f"gpu-op-{uuid.uuid4().hex[:6]}"
    cluster_objects.create_node(
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"team": "ml"}}}
    )
    patch_as(kube_admin, name, {"metadata": {"labels": {Gfd.GPU_PRODUCT: GFD_PRODUCT}}}, "gfd")
    patch_as(kube_admin, name, {"spec": {"taints": [OPERATOR_TAINT]}}, "gpu-operator")
    with agent_bound_to(control_plane, kube_admin, name) as agent:
        # the policy takes effect a moment after creation: wait for its first denial
        eventually_denied(
            lambda: patch_as(agent, name, {"metadata": {"labels": {"team": "web"}}}),
            lambda: patch_as(kube_admin, name, {"metadata": {"labels": {"team": "ml"}}}),
        )
        yield agent, name


def publish(agent: client.ApiClient, name: str, topology: Any = None, options: Any = None) -> Any:
    publisher = Publisher(agent_client(agent), name, options, backoff=fast_backoff())
    return publisher.publish(topology if topology is not None else dgx_h100())


def managers(admin: client.ApiClient, name: str) -> set[str]:
    entries = read_node(admin, name)["metadata"].get("managedFields") or []
    return {entry["manager"] for entry in entries}


OWNED = "may only change or remove nvidia.com/ labels it owns"
KEYS = "may only change labels under gputopo.io/ and nvidia.com/ that gputopo itself publishes"
TAINTS = "may only change its own taints"
# probe -> (the request, why it is denied)
PROBES: dict[str, tuple[dict[str, Any], str]] = {
    "change GFD's gpu.product": ({"metadata": {"labels": {Gfd.GPU_PRODUCT: "Forged"}}}, OWNED),
    "remove GFD's gpu.product": ({"metadata": {"labels": {Gfd.GPU_PRODUCT: None}}}, OWNED),
    "claim GFD's gpu.product": (
        {"metadata": {"annotations": {C.owned_labels_annotation: Gfd.GPU_PRODUCT}}},
        "may not claim ownership of a label it did not create",
    ),
    "set nvidia.com/mig.config": (
        {"metadata": {"labels": {"nvidia.com/mig.config": "all-1g.10gb"}}},
        KEYS,
    ),
    "set nvidia.com/gpu.deploy.driver": (
        {"metadata": {"labels": {"nvidia.com/gpu.deploy.driver": "false"}}},
        KEYS,
    ),
    "set an nvidia.com annotation": (
        {"metadata": {"annotations": {"nvidia.com/x": "y"}}},
        "may only change annotations under gputopo.io/",
    ),
    "remove the operator's nvidia.com/gpu taint": ({"spec": {"taints": []}}, TAINTS),
    "change the operator's nvidia.com/gpu taint": (
        {"spec": {"taints": [{**OPERATOR_TAINT, "effect": "PreferNoSchedule"}]}},
        TAINTS,
    ),
    "wipe managedFields": (
        {"metadata": {"managedFields": [{}]}},
        "may not change metadata.managedFields",
    ),
}


@pytest.mark.parametrize("probe", sorted(PROBES))
def test_agent_probe_is_denied_on_its_own_node(
    probe: str, agent_on_gpu_node: tuple[client.ApiClient, str], kube_admin: client.ApiClient
) -> None:
    agent, name = agent_on_gpu_node
    assert publish(agent, name).status == "written"  # the agent is a normal, publishing agent
    before = read_node(kube_admin, name)
    entries_before = managers(kube_admin, name)
    request, reason = PROBES[probe]
    with pytest.raises(client.ApiException) as denied:
        patch_as(agent, name, request)
    assert denied.value.status == 403, denied.value.body
    assert reason in str(denied.value.body)
    after = read_node(kube_admin, name)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert labels_of(after)[Gfd.GPU_PRODUCT] == GFD_PRODUCT
    assert OPERATOR_TAINT in taints_of(after)
    assert managers(kube_admin, name) == entries_before


def test_the_wipe_of_managed_fields_by_the_admin_is_what_the_probe_would_do(
    agent_on_gpu_node: tuple[client.ApiClient, str], kube_admin: client.ApiClient
) -> None:
    """The probe is real: the same request by someone the policy does not bind wipes them."""
    _, name = agent_on_gpu_node
    assert "gfd" in managers(kube_admin, name)
    patch_as(kube_admin, name, {"metadata": {"managedFields": [{}]}})
    assert not {"gfd", "gpu-operator"} & managers(kube_admin, name)


def test_agent_publishes_beside_gfd_and_the_operator_and_corrects_its_own_keys(
    agent_on_gpu_node: tuple[client.ApiClient, str], kube_admin: client.ApiClient
) -> None:
    agent, name = agent_on_gpu_node
    result = publish(agent, name)
    assert result.status == "written", result.message
    node = read_node(kube_admin, name)
    assert labels_of(node)[Gfd.GPU_PRODUCT] == GFD_PRODUCT  # GFD's, left alone
    assert labels_of(node)[Gfd.GPU_COUNT] == "8"
    assert OPERATOR_TAINT in taints_of(node)
    # Taints are one atomic field in managedFields: the agent's taint write hands the whole
    # list to it and the operator's taint-only entry goes (the API server's doing, allowed).
    assert {"gfd", "gputopo-agent"} <= managers(kube_admin, name)
    assert publish(agent, name).status == "unchanged"

    # --nvidia-labels=own: a `kubectl label --overwrite` of an owned key is corrected once (its
    # manager entry goes); in the default mode, defer, the overwrite stands (the conflict rule,
    # tests/integration/test_gfd_coexistence.py)
    patch_as(kube_admin, name, {"metadata": {"labels": {Gfd.GPU_COUNT: "5"}}}, "kubectl-label")
    assert publish(agent, name).status == "unchanged"
    assert labels_of(read_node(kube_admin, name))[Gfd.GPU_COUNT] == "5"
    assert publish(agent, name, options=PublishOptions(nvidia_labels="own")).status == "written"
    assert labels_of(read_node(kube_admin, name))[Gfd.GPU_COUNT] == "8"

    # a lost GPU: the health taint and the changed count are allowed
    result = publish(agent, name, degraded(dgx_h100(), 3, lost=True))
    assert result.status == "written", result.message
    node = read_node(kube_admin, name)
    assert {"key": C.health_taint, "value": "failed", "effect": "NoSchedule"} in taints_of(node)
    assert OPERATOR_TAINT in taints_of(node)


def test_deleted_ownership_annotation_is_recovered_and_a_stale_count_corrected(
    agent_on_gpu_node: tuple[client.ApiClient, str], kube_admin: client.ApiClient
) -> None:
    agent, name = agent_on_gpu_node
    assert publish(agent, name).status == "written"
    # a stale value the agent itself wrote (an older build, a bug): its field manager holds it
    patch_as(agent, name, {"metadata": {"labels": {Gfd.GPU_COUNT: "99"}}}, "gputopo-agent")
    patch_as(kube_admin, name, {"metadata": {"annotations": {C.owned_labels_annotation: None}}})
    result = publish(agent, name)
    assert result.status == "written", result.message
    node = read_node(kube_admin, name)
    assert labels_of(node)[Gfd.GPU_COUNT] == "8"
    assert labels_of(node)[Gfd.GPU_PRODUCT] == GFD_PRODUCT
    owned = node["metadata"]["annotations"][C.owned_labels_annotation].split(",")
    assert Gfd.GPU_COUNT in owned and Gfd.GPU_PRODUCT not in owned


def test_forged_ownership_annotation_never_blocks_the_health_taint(
    agent_on_gpu_node: tuple[client.ApiClient, str], kube_admin: client.ApiClient
) -> None:
    """Someone lists GFD's key and the operator's taint as gputopo's: the agent ignores both and
    its publishes keep working (issue 16: one forged key made every publish fail with 403)."""
    agent, name = agent_on_gpu_node
    assert publish(agent, name).status == "written"
    owned = read_node(kube_admin, name)["metadata"]["annotations"][C.owned_labels_annotation]
    forged = {
        C.owned_labels_annotation: f"{owned},{Gfd.GPU_PRODUCT},nvidia.com/mig.config,team",
        C.owned_taints_annotation: "nvidia.com/gpu:NoSchedule",
    }
    patch_as(kube_admin, name, {"metadata": {"annotations": forged}})
    publisher = Publisher(agent_client(agent), name, backoff=fast_backoff())
    result = publisher.publish(degraded(dgx_h100(), 3, lost=True))
    assert result.status == "written", result.message
    # mig.config, team, the operator's taint, and GFD's gpu.product: the annotation was last
    # written by someone else and managedFields does not confirm the agent wrote that label
    assert publisher.counters.foreign_owned_keys == 4
    node = read_node(kube_admin, name)
    assert {"key": C.health_taint, "value": "failed", "effect": "NoSchedule"} in taints_of(node)
    assert OPERATOR_TAINT in taints_of(node)
    assert labels_of(node)["team"] == "ml"
    assert labels_of(node)[Gfd.GPU_PRODUCT] == GFD_PRODUCT
