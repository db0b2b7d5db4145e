"""The chart deploys what the kustomize manifests under daemonset/ deploy.

daemonset/ is the source of truth for what is deployed. The chart renders its RBAC, admission
policies and CRDs from those files (charts/gputopo/manifests links to daemonset/), and templates
the workloads with values. For the equivalent configuration the chart's RBAC, admission
policies, CRDs, ServiceAccounts, Services, the scheduler's profile and the agent's DaemonSet
(with each kustomize component as its chart value) are equal to kustomize's objects, except for
the labels Helm adds to every object (who installed it) and the CRDs' keep-on-uninstall
annotation.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.packaging import kustomize
from tests.packaging.helm import template

HELM_LABELS = (
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
)
HELM_ANNOTATIONS = ("helm.sh/resource-policy",)
REPO = kustomize.REPO
# What the DaemonSet's container gets from the chart beyond kustomize's args: the publishing
# flags at their agent defaults, passed explicitly so `kubectl get ds -o yaml` shows them.
EXPLICIT_AGENT_ARGS = [
    "--mig-strategy=none",
    "--sla-taint-effect=PreferNoSchedule",
    "--health-taint-effect=NoSchedule",
    "--nvidia-labels=defer",
    "--driver-upgrade-poll-interval=10",
]

Key = tuple[str, str]


def _cel_as_tokens(value: Any) -> Any:
    """CEL expressions with their whitespace collapsed: kustomize's YAML reader (go-yaml v3)
    reads a folded scalar's more-indented line with one line break more than the YAML spec (and
    PyYAML, and Helm's reader) says; between CEL tokens that is the same expression."""
    if isinstance(value, dict):
        return {
            key: " ".join(item.split())
            if key in ("expression", "messageExpression") and isinstance(item, str)
            else _cel_as_tokens(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_cel_as_tokens(item) for item in value]
    return value


def _without_helm_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    metadata = obj["metadata"]
    for field, keys in (("labels", HELM_LABELS), ("annotations", HELM_ANNOTATIONS)):
        kept = {k: v for k, v in metadata.get(field, {}).items() if k not in keys}
        metadata.pop(field, None)
        if kept:
            metadata[field] = kept
    return obj


def _by_key(objects: list[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    return {
        (o["kind"], o["metadata"]["name"]): _cel_as_tokens(_without_helm_metadata(o))
        for o in objects
    }


def _assert_equal(
    chart: list[dict[str, Any]], manifests: list[dict[str, Any]], keys: set[Key]
) -> None:
    helm_objects, kustomize_objects = _by_key(chart), _by_key(manifests)
    assert keys <= set(kustomize_objects), sorted(keys - set(kustomize_objects))
    assert keys <= set(helm_objects), sorted(keys - set(helm_objects))
    for key in sorted(keys):
        assert helm_objects[key] == kustomize_objects[key], f"{key[0]}/{key[1]} differs"


@pytest.fixture(scope="module")
def agent_base() -> list[dict[str, Any]]:
    return kustomize.render(REPO / "daemonset")


@pytest.fixture(scope="module")
def chart_all_on() -> list[dict[str, Any]]:
    values = {
        "scheduler": {"enabled": True},
        "extender": {"enabled": True},
    }
    return template(values)


def _keys(objects: list[dict[str, Any]], kinds: set[str], name_prefix: str) -> set[Key]:
    return {
        (o["kind"], o["metadata"]["name"])
        for o in objects
        if o["kind"] in kinds and o["metadata"]["name"].startswith(name_prefix)
    }


RBAC = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
ADMISSION = {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}


def test_agent_rbac_and_admission_policy_equal_kustomize(
    agent_base: list[dict[str, Any]], chart_all_on: list[dict[str, Any]]
) -> None:
    keys = _keys(agent_base, RBAC | ADMISSION, "gputopo-agent")
    assert len(keys) >= 7  # SA, ClusterRole(+Binding), the policies and their bindings
    _assert_equal(chart_all_on, agent_base, keys)


def test_agent_crd_and_service_equal_kustomize(
    agent_base: list[dict[str, Any]], chart_all_on: list[dict[str, Any]]
) -> None:
    keys = {
        ("CustomResourceDefinition", "noderesourcetopologies.topology.node.k8s.io"),
        ("Service", "gputopo-agent-metrics"),
    }
    _assert_equal(chart_all_on, agent_base, keys)


def test_scheduler_rbac_crd_and_profile_equal_kustomize(
    chart_all_on: list[dict[str, Any]],
) -> None:
    scheduler = kustomize.render(REPO / "daemonset" / "scheduler")
    keys = _keys(scheduler, RBAC, "gputopo-scheduler")
    assert len(keys) >= 5  # SA, ClusterRole(+Binding), the leader Lease's Role(+Binding)
    keys |= {
        ("CustomResourceDefinition", "podgroups.scheduling.x-k8s.io"),
        ("ConfigMap", "gputopo-scheduler-profile"),
        ("Service", "gputopo-scheduler-metrics"),
    }
    _assert_equal(chart_all_on, scheduler, keys)


def test_extender_rbac_service_and_network_policy_equal_kustomize(
    chart_all_on: list[dict[str, Any]], tmp_path: Path
) -> None:
    manifests = kustomize.render(kustomize.overlay(tmp_path / "o", components=("extender",)))
    keys = _keys(manifests, RBAC | {"Service", "NetworkPolicy"}, "gputopo-extender")
    assert len(keys) >= 5  # SA, ClusterRole(+Binding), Service, NetworkPolicy
    _assert_equal(chart_all_on, manifests, keys)


def test_rebalance_rbac_and_deployment_equal_kustomize(tmp_path: Path) -> None:
    manifests = kustomize.render(kustomize.overlay(tmp_path / "o", components=("rebalance",)))
    chart = template({"rebalance": {"enabled": True}})
    keys = _keys(manifests, RBAC, "gputopo-rebalance")
    assert len(keys) >= 5  # SA, ClusterRole(+Binding), the Lease's Role(+Binding)
    _assert_equal(chart, manifests, keys)
    # The Deployment too, at the chart's defaults, but for what the chart adds: the image from
    # its values and its pull policy.
    key = ("Deployment", "gputopo-rebalance")
    expected, actual = _by_key(manifests)[key], _by_key(chart)[key]
    (expected_container,) = expected["spec"]["template"]["spec"]["containers"]
    (actual_container,) = actual["spec"]["template"]["spec"]["containers"]
    assert actual_container.pop("image") == "gputopo-scheduler:0.1.0"
    assert actual_container.pop("imagePullPolicy") == "IfNotPresent"
    assert expected_container.pop("image") == "gputopo:0.1.0"
    assert actual == expected


@pytest.mark.parametrize(
    ("components", "values"),
    [
        ((), {}),
        (("mig-monitor",), {"agent": {"migMonitor": True}}),
        (("pod-resources-root",), {"agent": {"podResources": {"runAsRoot": True}}}),
        (("nvidia-runtimeclass",), {"agent": {"runtimeClassName": "nvidia"}}),
        (
            ("mig-monitor", "pod-resources-root", "nvidia-runtimeclass"),
            {
                "agent": {
                    "migMonitor": True,
                    "podResources": {"runAsRoot": True},
                    "runtimeClassName": "nvidia",
                }
            },
        ),
    ],
    ids=["base", "mig-monitor", "pod-resources-root", "nvidia-runtimeclass", "all-three"],
)
def test_agent_daemonset_equals_kustomize_with_the_same_component(
    components: tuple[str, ...], values: dict[str, Any], tmp_path: Path
) -> None:
    manifests = kustomize.render(kustomize.overlay(tmp_path / "o", components=components))
    key = ("DaemonSet", "gputopo-agent")
    expected = _by_key(manifests)[key]
    actual = _by_key(template(values))[key]
    (expected_container,) = expected["spec"]["template"]["spec"]["containers"]
    (actual_container,) = actual["spec"]["template"]["spec"]["containers"]
    assert actual_container.pop("args") == expected_container.pop("args") + EXPLICIT_AGENT_ARGS
    assert actual == expected
