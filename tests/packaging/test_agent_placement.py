"""Which nodes get an agent: GPU nodes only by default (issue 19), by the labels NFD, GPU Feature
Discovery and the GPU Operator put there, evaluated with kube-scheduler's node-affinity rules
(gputopo's own model of them); and the two widenings docs/deployment.md shows render as it says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gputopo.scheduler.model.pod import parse_pod
from tests.packaging.kustomize import REPO, find, overlay, render

GPU_LABELS = (
    "feature.node.kubernetes.io/pci-10de.present",  # NFD as the GPU Operator configures it
    "feature.node.kubernetes.io/pci-0302_10de.present",  # NFD's default: class 0302 + vendor
    "feature.node.kubernetes.io/pci-0300_10de.present",  # NFD's default: a VGA-class GPU
    "nvidia.com/gpu.present",  # GPU Feature Discovery, the GPU Operator
)
TERMS_PATH = (
    "/spec/template/spec/affinity/nodeAffinity"
    "/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms"
)


def _agent_lands_on(objects: list[dict[str, Any]], labels: dict[str, str]) -> bool:
    template = find(objects, "DaemonSet", "gputopo-agent")["spec"]["template"]
    pod = parse_pod(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}, "spec": template["spec"]}
    )
    terms = pod.required_node_affinity
    return terms is None or any(term.matches(labels, "node-1") for term in terms)


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return render(REPO / "daemonset")


@pytest.mark.parametrize("label", GPU_LABELS)
def test_the_agent_runs_on_a_node_any_gpu_labeller_marked(
    base: list[dict[str, Any]], label: str
) -> None:
    assert _agent_lands_on(base, {label: "true", "kubernetes.io/os": "linux"})


@pytest.mark.parametrize(
    "labels",
    [
        {},
        {"kubernetes.io/os": "linux", "node-role.kubernetes.io/control-plane": ""},
        {"feature.node.kubernetes.io/pci-8086.present": "true"},
        {"nvidia.com/gpu.present": "false"},
    ],
)
def test_the_agent_skips_cpu_only_nodes(base: list[dict[str, Any]], labels: dict[str, str]) -> None:
    assert not _agent_lands_on(base, labels)


def _patched(tmp_path: Path, patch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    where = overlay(tmp_path / "overlay")
    document = yaml.safe_load((where / "kustomization.yaml").read_text())
    document["patches"] = [
        {
            "target": {"kind": "DaemonSet", "name": "gputopo-agent"},
            "patch": yaml.safe_dump(patch),
        }
    ]
    (where / "kustomization.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return render(where)


def test_an_overlay_adds_a_node_label_of_its_own(tmp_path: Path) -> None:
    """docs/deployment.md: one JSON patch adds a term; the GPU labels still select too."""
    term = {"matchExpressions": [{"key": "example.com/gpu", "operator": "Exists"}]}
    objects = _patched(tmp_path, [{"op": "add", "path": f"{TERMS_PATH}/-", "value": term}])
    assert _agent_lands_on(objects, {"example.com/gpu": ""})
    assert _agent_lands_on(objects, {"nvidia.com/gpu.present": "true"})
    assert not _agent_lands_on(objects, {})


def test_an_overlay_runs_it_on_every_node(tmp_path: Path) -> None:
    """docs/deployment.md: removing the affinity restores the agent on every node."""
    objects = _patched(tmp_path, [{"op": "remove", "path": "/spec/template/spec/affinity"}])
    assert "affinity" not in find(objects, "DaemonSet", "gputopo-agent")["spec"]["template"]["spec"]
    assert _agent_lands_on(objects, {})
