"""Which apply installs which CRD (issue 19): the agent's base installs only the
NodeResourceTopology CRD it writes; scheduler-plugins' PodGroup CRD comes only with gputopo's
scheduler, so installing the agent never replaces that project's definition."""

from __future__ import annotations

from pathlib import Path

from tests.packaging.kustomize import REPO, overlay, render

NRT = "noderesourcetopologies.topology.node.k8s.io"
PODGROUPS = "podgroups.scheduling.x-k8s.io"


def _crds(directory: Path) -> set[str]:
    return {
        o["metadata"]["name"] for o in render(directory) if o["kind"] == "CustomResourceDefinition"
    }


def test_the_agents_base_installs_only_the_nrt_crd() -> None:
    assert _crds(REPO / "daemonset") == {NRT}


def test_the_extender_component_adds_no_crd(tmp_path: Path) -> None:
    """The extender reads no PodGroups: adding it to the agent's base brings no PodGroup CRD."""
    assert _crds(overlay(tmp_path / "o", components=("extender",))) == {NRT}


def test_the_scheduler_installs_the_podgroup_crd_it_reads() -> None:
    objects = render(REPO / "daemonset" / "scheduler")
    assert _crds(REPO / "daemonset" / "scheduler") == {PODGROUPS}
    (crd,) = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    assert "namespace" not in crd["metadata"]
    assert crd["spec"]["scope"] == "Namespaced"
    assert any("status" in v.get("subresources", {}) for v in crd["spec"]["versions"])
