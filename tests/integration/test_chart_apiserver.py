"""The Helm chart on a real kube-apiserver: every rendered object accepted (with the scheduler
and the extender on), and a release installed, upgraded, uninstalled and installed again by the
pinned helm itself.

Rendered into a fresh namespace (`helm template -n <namespace>`), so nothing is left behind in
gputopo-system. Cluster-scoped objects (CRDs, ClusterRoles and bindings, admission policies) are
applied with server-side dry-run: the apiserver validates and admits them fully but stores
nothing another test could trip over (the session's CRDs stay the gputopo_crds fixture's). The
namespaced objects (ServiceAccounts, DaemonSet, Deployments, Services, ConfigMap, Role,
NetworkPolicy) are really applied, then read back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client, dynamic

from hack.testenv import Tools, ToolsMissingError
from tests.controlplane import ComponentFailedError, ControlPlane, running_control_plane
from tests.packaging import helm
from tests.packaging.helm import CHART, template
from tests.polling import eventually

pytestmark = pytest.mark.integration

FIELD_MANAGER = "gputopo-chart-test"
MERGE = "application/merge-patch+json"


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


def test_chart_with_scheduler_extender_and_rebalance_is_accepted_by_the_real_apiserver(
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
            "rebalance": {"enabled": True, "namespaces": ["batch"]},
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
    rebalance = apps.read_namespaced_deployment("gputopo-rebalance", namespace)
    (rebalance_container,) = rebalance.spec.template.spec.containers
    assert rebalance_container.command == ["gputopo-scheduler", "rebalance"]
    assert rebalance_container.args == ["--namespace=batch"]
    assert rebalance.spec.template.spec.service_account_name == "gputopo-rebalance"
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


# -- helm install, upgrade, uninstall, on a control plane of its own ------------------------------
#
# A release installs cluster-scoped objects for real (CRDs, ClusterRoles, the admission policies,
# all with fixed names other tests create too), so the lifecycle runs against a private etcd and
# kube-apiserver, started for this module (about 5 s).

NRT_CRD = "noderesourcetopologies.topology.node.k8s.io"
PODGROUP_CRD = "podgroups.scheduling.x-k8s.io"
RELEASE_NAMESPACE = "gpu-agents"  # not gputopo-system: the chart must follow it
PRIVILEGED = {
    "pod-security.kubernetes.io/enforce": "privileged",
    "pod-security.kubernetes.io/audit": "restricted",
    "pod-security.kubernetes.io/warn": "restricted",
}


@pytest.fixture(scope="module")
def private_plane(
    testenv_tools: Tools, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    try:
        with running_control_plane(testenv_tools, tmp_path_factory.mktemp("chart-plane")) as plane:
            yield plane
    except (ToolsMissingError, ComponentFailedError) as error:
        pytest.fail(f"{type(error).__name__}: {error}", pytrace=False)


def _helm(plane: ControlPlane, *args: str) -> str:
    result = helm.run("--kubeconfig", str(plane.admin_kubeconfig), *args)
    assert result.returncode == 0, f"helm {args[0]}: {result.stderr.strip()}"
    return result.stdout


def _agent_args(plane: ControlPlane) -> list[str]:
    daemonset = client.AppsV1Api(plane.admin).read_namespaced_daemon_set(
        "gputopo-agent", RELEASE_NAMESPACE
    )
    return list(daemonset.spec.template.spec.containers[0].args)


def _exists(read: Callable[[], object]) -> bool:
    try:
        read()
    except client.ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def _agent_is_kept_to_its_own_node(plane: ControlPlane) -> None:
    """The release's RBAC and admission policy at work: the agent's ServiceAccount, its token
    bound to a Pod on node A as the DaemonSet's would be, labels node A and is refused node B."""
    core = client.CoreV1Api(plane.admin)
    node_a, node_b = "gpu-node-a", "gpu-node-b"
    for name in (node_a, node_b):
        core.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
    pod = core.create_namespaced_pod(
        RELEASE_NAMESPACE,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "gputopo-agent-on-a"},
            "spec": {
                "nodeName": node_a,
                "serviceAccountName": "gputopo-agent",
                "containers": [{"name": "agent", "image": "gputopo:test"}],
            },
        },
    )
    agent = client.CoreV1Api(
        plane.client_for_service_account(RELEASE_NAMESPACE, "gputopo-agent", bound_pod=pod)
    )
    label = {"metadata": {"labels": {"gputopo.io/gpu.interconnect": "nvswitch"}}}

    def refused_on_b() -> str | None:
        try:
            agent.patch_node(node_b, label, _content_type=MERGE)
        except client.ApiException as error:
            assert error.status == 403, error.body
            return str(error.body)
        core.patch_node(
            node_b,
            {"metadata": {"labels": {"gputopo.io/gpu.interconnect": None}}},
            _content_type=MERGE,
        )
        return None  # the policy is not enforced yet: a moment after its creation

    assert "only change the Node its token is bound to" in eventually(
        refused_on_b, what="the agent refused on another node"
    )
    agent.patch_node(node_a, label, _content_type=MERGE)
    assert core.read_node(node_a).metadata.labels["gputopo.io/gpu.interconnect"] == "nvswitch"


def test_helm_install_upgrade_uninstall_and_reinstall(private_plane: ControlPlane) -> None:
    plane = private_plane
    plane.create_namespace(RELEASE_NAMESPACE, PRIVILEGED)
    release = ("gputopo", str(CHART), "-n", RELEASE_NAMESPACE)
    apps = client.AppsV1Api(plane.admin)
    extensions = client.ApiextensionsV1Api(plane.admin)
    admission = client.AdmissionregistrationV1Api(plane.admin)
    rbac = client.RbacAuthorizationV1Api(plane.admin)

    _helm(plane, "install", *release, "--set", "scheduler.enabled=true")
    assert "--mig-strategy=none" in _agent_args(plane)
    assert _exists(lambda: apps.read_namespaced_deployment("gputopo-scheduler", RELEASE_NAMESPACE))
    assert {NRT_CRD, PODGROUP_CRD} <= {
        crd.metadata.name for crd in extensions.list_custom_resource_definition().items
    }
    policy = admission.read_validating_admission_policy("gputopo-agent-node-writes")
    _agent_is_kept_to_its_own_node(plane)

    # An upgrade changes the agent's flags and removes the scheduler; the PodGroup CRD stays.
    _helm(
        plane,
        "upgrade",
        *release,
        "--reuse-values",
        "--set",
        "migStrategy=mixed,scheduler.enabled=false",
    )
    assert "--mig-strategy=mixed" in _agent_args(plane)
    eventually(
        lambda: (
            not _exists(
                lambda: apps.read_namespaced_deployment("gputopo-scheduler", RELEASE_NAMESPACE)
            )
        ),
        what="the scheduler's Deployment gone after the upgrade",
    )
    assert _exists(lambda: extensions.read_custom_resource_definition(PODGROUP_CRD))

    # Uninstall removes everything but the CRDs (helm.sh/resource-policy: keep).
    output = _helm(plane, "uninstall", "gputopo", "-n", RELEASE_NAMESPACE)
    assert NRT_CRD in output  # helm names what it kept
    eventually(
        lambda: (
            not _exists(lambda: apps.read_namespaced_daemon_set("gputopo-agent", RELEASE_NAMESPACE))
        ),
        what="the agent's DaemonSet gone after the uninstall",
    )
    assert not _exists(lambda: admission.read_validating_admission_policy(policy.metadata.name))
    assert not _exists(lambda: rbac.read_cluster_role("gputopo-agent"))
    assert _exists(lambda: extensions.read_custom_resource_definition(NRT_CRD))
    assert _exists(lambda: extensions.read_custom_resource_definition(PODGROUP_CRD))

    # A new install of the same release adopts the kept CRDs.
    _helm(plane, "install", *release)
    assert "--mig-strategy=none" in _agent_args(plane)
    crd = extensions.read_custom_resource_definition(NRT_CRD)
    assert crd.metadata.labels["app.kubernetes.io/managed-by"] == "Helm"
