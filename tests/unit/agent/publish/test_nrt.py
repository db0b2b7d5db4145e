"""NodeResourceTopology content: zones per NUMA node, costs, GPUs, available as an input."""

from __future__ import annotations

from pathlib import Path

import yaml

from gputopo.agent.publish.nrt import build_nrt
from tests.unit.agent.machines import cpu_only, dgx_h100

REPO = Path(__file__).resolve().parents[4]


def resources(zone: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    return {r["name"]: r for r in zone["resources"]}


def test_dgx_h100_zones() -> None:
    nrt = build_nrt("dgx-1", dgx_h100())
    assert nrt["apiVersion"] == "topology.node.k8s.io/v1alpha2"
    assert nrt["kind"] == "NodeResourceTopology"
    assert nrt["metadata"]["name"] == "dgx-1"
    assert [z["name"] for z in nrt["zones"]] == ["node-0", "node-1"]
    zone = nrt["zones"][1]
    assert zone["type"] == "Node"
    assert zone["costs"] == [{"name": "node-0", "value": 21}, {"name": "node-1", "value": 10}]
    gpu = resources(zone)["nvidia.com/gpu"]
    assert gpu == {"name": "nvidia.com/gpu", "capacity": 4, "allocatable": 4, "available": 4}
    assert resources(zone)["cpu"]["capacity"] == 112
    assert resources(zone)["memory"]["capacity"] == 1024**4


def test_available_comes_from_the_caller_and_is_clamped() -> None:
    nrt = build_nrt("dgx-1", dgx_h100(), {0: {"nvidia.com/gpu": 1, "cpu": 500}, 1: {"cpu": -3}})
    zone0, zone1 = nrt["zones"]
    assert resources(zone0)["nvidia.com/gpu"]["available"] == 1
    assert resources(zone0)["cpu"]["available"] == 112  # never above allocatable
    assert resources(zone1)["cpu"]["available"] == 0  # never negative
    assert resources(zone1)["nvidia.com/gpu"]["available"] == 4


def test_cpu_only_node_has_zero_gpus_per_zone() -> None:
    nrt = build_nrt("cpu-1", cpu_only())
    assert all(resources(z)["nvidia.com/gpu"]["capacity"] == 0 for z in nrt["zones"])


def test_shipped_crd_serves_v1alpha2_cluster_scoped() -> None:
    crd = yaml.safe_load((REPO / "daemonset/crds/noderesourcetopologies.yaml").read_text())
    assert crd["metadata"]["name"] == "noderesourcetopologies.topology.node.k8s.io"
    assert crd["spec"]["scope"] == "Cluster"
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    assert versions["v1alpha2"]["storage"] is True
    schema = versions["v1alpha2"]["schema"]["openAPIV3Schema"]
    resource = schema["properties"]["zones"]["items"]["properties"]["resources"]["items"]
    assert resource["required"] == ["allocatable", "available", "capacity", "name"]
