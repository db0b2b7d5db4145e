"""The Helm chart, rendered by the pinned helm and sent to a real kube-apiserver: every object is
accepted, with the scheduler and the extender on.

Rendered into a fresh namespace (`helm template -n <namespace>`), so nothing is left behind in
gputopo-system. Cluster-scoped objects (CRDs, ClusterRoles and bindings, admission policies) are
applied with server-side dry-run: the apiserver validates and admits them fully but stores
nothing another test could trip over (the session's CRDs stay the gputopo_crds fixture's). The
namespaced objects (ServiceAccounts, DaemonSet, Deployments, Services, ConfigMap, Role,
NetworkPolicy) are really applied, then read back.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client, dynamic

from tests.packaging.helm import template

pytestmark = pytest.mark.integration

FIELD_MANAGER = "gputopo-chart-test"


def _apply(api: dynamic.DynamicClient, body: dict[str, Any], *, dry_run: bool) -> dict[str, Any]:
    resource = api.resources.get(api_version=body["apiVersion"], kind=body["kind"])
    kwargs: dict[str, Any] = {"field_manager": FIELD_MANAGER, "force_conflicts": True}
    if dry_run:
        kwargs["dry_run"] = "All"
    applied = resource.server_side_apply(
        body=body,
        name=body["metadata"]["name"],
        namespace=body["metadata"].get("namespace") if resource.namespaced else None,
        **kwargs,
    )
    return dict(applied.to_dict())


def test_chart_with_scheduler_and_extender_is_accepted_by_the_real_apiserver(
    kube_admin: client.ApiClient, namespace: str
) -> None:
    objects = template(
        {
            "scheduler": {"enabled": True},
            "extender": {
                "enabled": True,
                "networkPolicy": {"enabled": True, "schedulerCIDRs": ["10.0.0.10/32"]},
            },
            "agent": {"migMonitor": True, "podResources": {"runAsRoot": True}},
        },
        namespace=namespace,
    )
    api = dynamic.DynamicClient(kube_admin)

    def namespaced(body: dict[str, Any]) -> bool:
        return bool(api.resources.get(api_version=body["apiVersion"], kind=body["kind"]).namespaced)

    in_namespace = [o for o in objects if namespaced(o)]
    cluster_scoped = [o for o in objects if not namespaced(o)]
    assert {o["metadata"]["namespace"] for o in in_namespace} == {namespace}
    assert all("namespace" not in o["metadata"] for o in cluster_scoped)

    accepted = [_apply(api, body, dry_run=True) for body in cluster_scoped]
    accepted += [_apply(api, body, dry_run=False) for body in in_namespace]
    assert sorted((o["kind"], o["metadata"]["name"]) for o in accepted) == sorted(
        (o["kind"], o["metadata"]["name"]) for o in objects
    )
    policy = next(o for o in accepted if o["metadata"]["name"] == "gputopo-agent-node-writes")
    assert f"system:serviceaccount:{namespace}:gputopo-agent" in str(policy["spec"])

    apps = client.AppsV1Api(kube_admin)
    daemonset = apps.read_namespaced_daemon_set("gputopo-agent", namespace)
    pod = daemonset.spec.template.spec
    assert pod.service_account_name == "gputopo-agent"
    assert pod.priority_class_name == "system-node-critical"
    assert pod.security_context.run_as_user == 0  # podResources.runAsRoot
    (container,) = pod.containers
    assert container.security_context.capabilities.add == ["SYS_ADMIN"]  # migMonitor
    assert container.security_context.capabilities.drop == ["ALL"]
    assert container.security_context.read_only_root_filesystem is True
    assert "--publish-nrt" in container.args
    terms = pod.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    assert {
        expression.key
        for term in terms.node_selector_terms
        for expression in term.match_expressions
    } >= {"feature.node.kubernetes.io/pci-10de.present", "nvidia.com/gpu.present"}

    scheduler = apps.read_namespaced_deployment("gputopo-scheduler", namespace)
    (scheduler_container,) = scheduler.spec.template.spec.containers
    assert scheduler_container.command == ["gputopo-scheduler", "run"]
    extender = apps.read_namespaced_deployment("gputopo-extender", namespace)
    assert extender.spec.template.spec.volumes[0].secret.secret_name == "gputopo-extender-tls"
    core = client.CoreV1Api(kube_admin)
    assert (
        core.read_namespaced_service("gputopo-agent-metrics", namespace).spec.cluster_ip == "None"
    )
    profile = core.read_namespaced_config_map("gputopo-scheduler-profile", namespace)
    assert "kind: SchedulerProfile" in profile.data["profile.yaml"]
    policy_read = client.NetworkingV1Api(kube_admin).read_namespaced_network_policy(
        "gputopo-extender", namespace
    )
    assert policy_read.spec.ingress[0]._from[1].ip_block.cidr == "10.0.0.10/32"
