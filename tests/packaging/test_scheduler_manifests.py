"""daemonset/scheduler as rendered by the pinned kustomize: two replicas, least privilege."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.packaging.kustomize import REPO, find, render


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return render(REPO / "daemonset" / "scheduler")


def rules_of(objects: list[dict[str, Any]], kind: str, name: str) -> set[tuple[str, str, str]]:
    granted: set[tuple[str, str, str]] = set()
    for rule in find(objects, kind, name)["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    granted.add((group, resource, verb))
    return granted


def test_deployment_runs_two_leader_elected_replicas_as_its_service_account(
    objects: list[dict[str, Any]],
) -> None:
    deployment = find(objects, "Deployment", "gputopo-scheduler")
    assert deployment["metadata"]["namespace"] == "gputopo-system"
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "gputopo-scheduler"
    (container,) = pod["containers"]
    assert container["command"] == ["gputopo-scheduler", "run"]
    env = {item["name"]: item for item in container["env"]}
    assert env["GPUTOPO_IDENTITY"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["GPUTOPO_PROFILE"]["value"] == "/etc/gputopo/profile.yaml"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_cluster_role_grants_exactly_what_the_runtime_uses(objects: list[dict[str, Any]]) -> None:
    expected = {
        ("", "pods", "get"),
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("", "pods", "delete"),
        ("policy", "poddisruptionbudgets", "list"),
        ("scheduling.x-k8s.io", "podgroups", "get"),
        ("scheduling.x-k8s.io", "podgroups", "list"),
        ("scheduling.x-k8s.io", "podgroups", "watch"),
        ("scheduling.x-k8s.io", "podgroups/status", "patch"),
        ("scheduling.k8s.io", "podgroups", "get"),  # Kubernetes' own gang API
        ("scheduling.k8s.io", "podgroups", "list"),
        ("scheduling.k8s.io", "podgroups", "watch"),
        ("scheduling.k8s.io", "podgroups/status", "patch"),
        ("", "pods/binding", "create"),
        ("", "pods/status", "patch"),
        ("events.k8s.io", "events", "create"),
        ("events.k8s.io", "events", "patch"),
        ("topology.node.k8s.io", "noderesourcetopologies", "list"),
        ("topology.node.k8s.io", "noderesourcetopologies", "watch"),
    }
    for resource, group in (
        ("nodes", ""),
        ("namespaces", ""),
        ("priorityclasses", "scheduling.k8s.io"),
        # DRA (scheduler/dra): devices, classes, claims, device taints
        ("resourceslices", "resource.k8s.io"),
        ("deviceclasses", "resource.k8s.io"),
        ("resourceclaims", "resource.k8s.io"),
        ("resourceclaimtemplates", "resource.k8s.io"),
        ("devicetaintrules", "resource.k8s.io"),
    ):
        expected |= {(group, resource, verb) for verb in ("get", "list", "watch")}
    expected |= {
        ("resource.k8s.io", "resourceclaims", "update"),  # the finalizer before allocating
        ("resource.k8s.io", "resourceclaims", "create"),  # DRA-backed extended resources
        ("resource.k8s.io", "resourceclaims", "delete"),
        ("resource.k8s.io", "resourceclaims/status", "update"),  # allocation, reservedFor
        ("resource.k8s.io", "resourceclaims/binding", "update"),
    }
    assert rules_of(objects, "ClusterRole", "gputopo-scheduler") == expected


def test_lease_access_is_confined_to_its_namespace_and_lease(
    objects: list[dict[str, Any]],
) -> None:
    role = find(objects, "Role", "gputopo-scheduler-leader-election")
    assert role["metadata"]["namespace"] == "gputopo-system"
    named = [rule for rule in role["rules"] if rule.get("resourceNames")]
    assert named == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["gputopo-scheduler"],
            "verbs": ["get", "update"],
        }
    ]
    assert rules_of(objects, "Role", "gputopo-scheduler-leader-election") == {
        ("coordination.k8s.io", "leases", "create"),
        ("coordination.k8s.io", "leases", "get"),
        ("coordination.k8s.io", "leases", "update"),
    }


def test_the_shipped_profile_configmap_is_the_default_profile(
    objects: list[dict[str, Any]],
) -> None:
    """The ConfigMap starts as scheduler/profiles/default.yaml, so a new weight or key (the
    DynamicResources score, node sampling) ships with it."""
    config_map = find(objects, "ConfigMap", "gputopo-scheduler-profile")
    default = Path(__file__).resolve().parents[2] / "scheduler" / "profiles" / "default.yaml"
    assert yaml.safe_load(config_map["data"]["profile.yaml"]) == yaml.safe_load(
        default.read_text(encoding="utf-8")
    )
