"""The rendered kustomize base, sent to a real kube-apiserver: every object is accepted.

Rendered into a fresh namespace (an overlay sets ``namespace:``, as a user's overlay would), so the
test leaves nothing behind in ``gputopo-system``. Cluster-scoped objects (CRD, ClusterRole and
binding, admission policy) are applied with server-side dry-run: the apiserver validates and
admits them fully but stores nothing another test could trip over. The namespaced objects
(ServiceAccount, DaemonSet, Service) are really applied, then read back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, dynamic

from tests.packaging.kustomize import overlay, render

pytestmark = pytest.mark.integration

FIELD_MANAGER = "gputopo-deploy-test"


def _apply(api: dynamic.DynamicClient, body: dict[str, Any], *, dry_run: bool) -> dict[str, Any]:
    resource = api.resources.get(api_version=body["apiVersion"], kind=body["kind"])
    kwargs: dict[str, Any] = {"field_manager": FIELD_MANAGER, "force_conflicts": True}
    if dry_run:
        kwargs["dry_run"] = "All"
    namespace = body["metadata"].get("namespace") if resource.namespaced else None
    applied = resource.server_side_apply(
        body=body, name=body["metadata"]["name"], namespace=namespace, **kwargs
    )
    return dict(applied.to_dict())


def _namespaced(api: dynamic.DynamicClient, body: dict[str, Any]) -> bool:
    return bool(api.resources.get(api_version=body["apiVersion"], kind=body["kind"]).namespaced)


def test_base_is_accepted_by_the_real_apiserver(
    kube_admin: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    objects = render(overlay(tmp_path / "overlay", namespace=namespace))
    api = dynamic.DynamicClient(kube_admin)
    namespaced = [o for o in objects if _namespaced(api, o)]
    cluster_scoped = [o for o in objects if not _namespaced(api, o)]
    assert {o["kind"] for o in namespaced} == {"ServiceAccount", "DaemonSet", "Service"}
    assert {o["metadata"]["namespace"] for o in namespaced} == {namespace}

    accepted = []
    for body in cluster_scoped:
        # The Namespace exists already (the fixture made it): dry-run shows the labels apply.
        # kustomize's namespace transformer does not know ValidatingAdmissionPolicy is
        # cluster-scoped and stamps the namespace on it; the scope is the apiserver's to say.
        body["metadata"].pop("namespace", None)
        result = _apply(api, body, dry_run=True)
        accepted.append((result["kind"], result["metadata"]["name"]))
    for body in namespaced:
        result = _apply(api, body, dry_run=False)
        accepted.append((result["kind"], result["metadata"]["name"]))
    assert len(accepted) == len(objects)

    binding = next(o for o in cluster_scoped if o["kind"] == "ClusterRoleBinding")
    assert binding["subjects"][0]["namespace"] == namespace  # kustomize followed the namespace

    daemonset = client.AppsV1Api(kube_admin).read_namespaced_daemon_set("gputopo-agent", namespace)
    pod = daemonset.spec.template.spec
    assert pod.priority_class_name == "system-node-critical"
    container = pod.containers[0]
    assert container.security_context.capabilities.drop == ["ALL"]
    assert container.security_context.read_only_root_filesystem is True
    assert pod.security_context.run_as_non_root is True
    service = client.CoreV1Api(kube_admin).read_namespaced_service(
        "gputopo-agent-metrics", namespace
    )
    assert service.spec.cluster_ip == "None"


def test_extender_component_is_accepted_and_serves_from_its_own_service_account(
    kube_admin: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    objects = render(overlay(tmp_path / "overlay", components=("extender",), namespace=namespace))
    api = dynamic.DynamicClient(kube_admin)
    extender = [o for o in objects if o["metadata"]["name"] == "gputopo-extender"]
    assert sorted(o["kind"] for o in extender) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "NetworkPolicy",
        "Service",
        "ServiceAccount",
    ]
    for body in extender:
        if _namespaced(api, body):
            _apply(api, body, dry_run=False)
        else:
            body["metadata"].pop("namespace", None)
            _apply(api, body, dry_run=True)

    binding = next(o for o in extender if o["kind"] == "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "gputopo-extender", "namespace": namespace}
    ]
    role = next(o for o in extender if o["kind"] == "ClusterRole")
    verbs = {(r["resources"][0], v) for r in role["rules"] for v in r["verbs"]}
    assert ("pods/binding", "create") in verbs  # bindVerb
    assert not {v for _, v in verbs} & {"delete", "update", "patch"}  # nothing else written

    deployment = client.AppsV1Api(kube_admin).read_namespaced_deployment(
        "gputopo-extender", namespace
    )
    pod = deployment.spec.template.spec
    assert pod.service_account_name == "gputopo-extender"
    container = pod.containers[0]
    assert container.command == ["gputopo-scheduler", "extender"]
    assert {e.name: e.value for e in container.env}["GPUTOPO_EXTENDER_LISTEN"] == ":8888"
    assert container.readiness_probe.http_get.path == "/readyz"
    assert container.security_context.read_only_root_filesystem is True
    service = client.CoreV1Api(kube_admin).read_namespaced_service("gputopo-extender", namespace)
    assert [(p.port, p.target_port) for p in service.spec.ports] == [(8888, "extender")]
