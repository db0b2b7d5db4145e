"""daemonset/components/rebalance as rendered by the pinned kustomize: dry run as shipped, every
variable a flag's twin, and least privilege (evictions only through the Eviction API)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gputopo.scheduler.cli import build_parser
from gputopo.scheduler.cli_rebalance import controller_settings
from tests.packaging.kustomize import find, overlay, render
from tests.packaging.test_scheduler_manifests import rules_of

pytestmark = pytest.mark.packaging


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    directory: Path = tmp_path_factory.mktemp("overlay") / "overlay"
    return render(overlay(directory, components=("rebalance",), namespace="gputopo-system"))


def test_the_controller_ships_in_dry_run_and_every_variable_is_a_flags_twin(
    objects: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = find(objects, "Deployment", "gputopo-rebalance")
    assert deployment["metadata"]["namespace"] == "gputopo-system"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "gputopo-rebalance"
    (container,) = pod["containers"]
    assert container["command"] == ["gputopo-scheduler", "rebalance"]
    for variable in container["env"]:
        monkeypatch.setenv(variable["name"], variable.get("value") or "from-field")
    args = build_parser().parse_args(["rebalance"])  # an unknown variable would be ignored:
    names = {variable["name"] for variable in container["env"]}
    twins = {f"GPUTOPO_{a.dest.upper()}" for a in _rebalance_actions()}
    assert names <= twins, names - twins
    settings = controller_settings(args)
    assert settings.dry_run is True
    assert args.cluster is None  # the live controller, not the offline plan
    assert args.lease_name == "gputopo-rebalance" and args.leader_elect
    assert settings.wait_s == 300.0
    port = container["ports"][0]["containerPort"]
    assert args.metrics_address == f":{port}"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def _rebalance_actions() -> list[Any]:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    return list(subparsers.choices["rebalance"]._actions)  # type: ignore[attr-defined]


def test_cluster_role_grants_exactly_what_the_controller_uses(
    objects: list[dict[str, Any]],
) -> None:
    expected = {
        ("", "pods/eviction", "create"),
        ("", "pods/status", "patch"),
        ("events.k8s.io", "events", "create"),
        ("events.k8s.io", "events", "patch"),
    }
    for group, resource in (
        ("", "nodes"),
        ("", "pods"),
        ("", "namespaces"),
        ("scheduling.k8s.io", "priorityclasses"),
        ("policy", "poddisruptionbudgets"),
    ):
        expected |= {(group, resource, verb) for verb in ("list", "watch")}
    granted = rules_of(objects, "ClusterRole", "gputopo-rebalance")
    assert granted == expected
    assert ("", "pods", "delete") not in granted  # never around the budgets
    binding = find(objects, "ClusterRoleBinding", "gputopo-rebalance")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "gputopo-rebalance", "namespace": "gputopo-system"}
    ]


def test_lease_access_is_confined_to_its_namespace_and_lease(
    objects: list[dict[str, Any]],
) -> None:
    role = find(objects, "Role", "gputopo-rebalance-leader-election")
    assert role["metadata"]["namespace"] == "gputopo-system"
    named = [rule for rule in role["rules"] if rule.get("resourceNames")]
    assert named == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["gputopo-rebalance"],
            "verbs": ["get", "update"],
        }
    ]
    assert rules_of(objects, "Role", "gputopo-rebalance-leader-election") == {
        ("coordination.k8s.io", "leases", "create"),
        ("coordination.k8s.io", "leases", "get"),
        ("coordination.k8s.io", "leases", "update"),
    }
