"""The test control plane speaks DRA: resource.k8s.io/v1 is served and kube-controller-manager's
ResourceClaim controller, started on demand, turns a Pod's claim templates into claims."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from tests.controlplane import (
    DRA_CONTROLLERS,
    RESOURCE_CLAIM_CONTROLLER,
    ControlPlane,
    ManagedProcess,
)
from tests.polling import eventually

pytestmark = pytest.mark.integration

RESOURCE_GROUP = "resource.k8s.io"
RESOURCE_VERSION = "v1"
# Nothing schedules Pods with this scheduler name: the claim must come from the controller alone.
NO_SCHEDULER = "nobody-schedules-this"


def test_resource_v1_serves_device_taint_rules_and_the_dra_kinds(
    kube_admin: client.ApiClient,
) -> None:
    discovery = client.ResourceV1Api(kube_admin).get_api_resources()
    served = {resource.name for resource in discovery.resources}

    assert {
        "deviceclasses",
        "resourceslices",
        "resourceclaims",
        "resourceclaimtemplates",
        "devicetaintrules",
        "devicetaintrules/status",
    } <= served


def test_resource_claim_controller_makes_a_claim_from_the_pods_template(
    kube_admin: client.ApiClient, controller_manager: ManagedProcess, namespace: str
) -> None:
    custom = client.CustomObjectsApi(kube_admin)
    template: dict[str, Any] = {
        "apiVersion": f"{RESOURCE_GROUP}/{RESOURCE_VERSION}",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": "one-gpu"},
        "spec": {
            "spec": {
                "devices": {
                    "requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu.nvidia.com"}}]
                }
            }
        },
    }
    custom.create_namespaced_custom_object(
        RESOURCE_GROUP, RESOURCE_VERSION, namespace, "resourceclaimtemplates", template
    )
    pod = client.CoreV1Api(kube_admin).create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "trainer"},
            "spec": {
                "schedulerName": NO_SCHEDULER,
                "resourceClaims": [{"name": "gpus", "resourceClaimTemplateName": "one-gpu"}],
                "containers": [
                    {
                        "name": "main",
                        "image": "registry.k8s.io/pause:3.10",
                        "resources": {"claims": [{"name": "gpus"}]},
                    }
                ],
            },
        },
    )

    def claims() -> list[dict[str, Any]]:
        listed = custom.list_namespaced_custom_object(
            RESOURCE_GROUP, RESOURCE_VERSION, namespace, "resourceclaims"
        )
        return list(listed["items"])

    made = eventually(claims, 30, "a ResourceClaim made from template one-gpu")
    assert len(made) == 1
    owners = made[0]["metadata"]["ownerReferences"]
    assert [(o["kind"], o["name"], o["uid"]) for o in owners] == [
        ("Pod", "trainer", pod.metadata.uid)
    ]
    assert made[0]["spec"]["devices"]["requests"][0]["name"] == "gpu"
    statuses = eventually(
        lambda: (
            client.CoreV1Api(kube_admin)
            .read_namespaced_pod("trainer", namespace)
            .status.resource_claim_statuses
        ),
        30,
        "the Pod's status naming its generated claim",
    )
    assert [(s.name, s.resource_claim_name) for s in statuses] == [
        ("gpus", made[0]["metadata"]["name"])
    ]


def test_controller_manager_runs_only_the_controllers_asked_for(
    control_plane: ControlPlane, controller_manager: ManagedProcess
) -> None:
    assert control_plane.start_controller_manager(DRA_CONTROLLERS) is controller_manager
    try:
        only_claims = control_plane.start_controller_manager([RESOURCE_CLAIM_CONTROLLER])

        assert only_claims is not controller_manager
        assert not controller_manager.alive()
        assert f"--controllers={RESOURCE_CLAIM_CONTROLLER}" in only_claims.argv
    finally:
        restored = control_plane.start_controller_manager(DRA_CONTROLLERS)
    assert f"--controllers={','.join(DRA_CONTROLLERS)}" in restored.argv
