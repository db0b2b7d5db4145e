"""In-process `simulate` throughput: 1000 nodes x 10 000 pods of mixed shapes (seeded).

Run with `make bench` (or `pytest tests/bench/test_simulate_bench.py --benchmark-only -o
addopts=""`); `python tests/bench/test_simulate_bench.py [nodes] [pods]` prints the same numbers
without pytest. Placing a pod is measured end to end: filters, scores, pick and assume; parsing
the input is reported separately.
"""

from __future__ import annotations

import random
import sys
import time
from collections import Counter
from typing import Any

import pytest

from gputopo.scheduler.model import parse_node, parse_pod
from gputopo.scheduler.simulate import ClusterInput, simulate

ZONE = "topology.kubernetes.io/zone"
HOST = "kubernetes.io/hostname"
SLA = "gputopo.io/sla"
PRODUCT = "nvidia.com/gpu.product"
NVLINK = "gputopo.io/gpu.nvlink-domain-size"

NODE_TYPES = [
    # (product, gpus, nvlink domain, cpu, memory, share)
    ("NVIDIA-H100-80GB-HBM3", 8, 8, "224", "2000Gi", 0.25),
    ("NVIDIA-A100-SXM4-40GB", 8, 4, "128", "1000Gi", 0.2),
    ("NVIDIA-L4", 4, 1, "48", "192Gi", 0.15),
    (None, 0, 0, "64", "256Gi", 0.4),
]


def make_nodes(count: int, rng: random.Random) -> list[dict[str, Any]]:
    nodes = []
    for i in range(count):
        pick = rng.random()
        node_type = NODE_TYPES[-1]
        for candidate in NODE_TYPES:
            if pick < candidate[5]:
                node_type = candidate
                break
            pick -= candidate[5]
        product, gpus, nvlink, cpu, memory, _ = node_type
        name = f"node-{i:05d}"
        labels = {HOST: name, ZONE: f"zone-{i % 3}", "pool": "gpu" if gpus else "cpu"}
        allocatable = {"cpu": cpu, "memory": memory, "ephemeral-storage": "1Ti", "pods": "110"}
        taints = []
        if product is not None:
            sla = rng.choice([850, 900, 930, 960, 990])
            labels |= {
                PRODUCT: product,
                "nvidia.com/gpu.count": str(gpus),
                NVLINK: str(nvlink),
                SLA: str(sla),
            }
            allocatable["nvidia.com/gpu"] = str(gpus)
            taints.append({"key": SLA, "value": str(sla), "effect": "NoSchedule"})
        if rng.random() < 0.05:
            taints.append({"key": "maintenance", "value": "soon", "effect": "PreferNoSchedule"})
        spec: dict[str, Any] = {"taints": taints}
        if rng.random() < 0.01:
            spec["unschedulable"] = True
        nodes.append(
            {
                "kind": "Node",
                "metadata": {"name": name, "labels": labels},
                "spec": spec,
                "status": {"allocatable": allocatable},
            }
        )
    return nodes


def _container(requests: dict[str, str], ports: list[dict[str, Any]] | None = None) -> Any:
    container: dict[str, Any] = {"name": "main", "image": "x", "resources": {"requests": requests}}
    if requests.get("nvidia.com/gpu"):
        container["resources"]["limits"] = {"nvidia.com/gpu": requests["nvidia.com/gpu"]}
    if ports:
        container["ports"] = ports
    return container


def make_pod(i: int, rng: random.Random) -> dict[str, Any]:
    """One pod of a random shape; shapes repeat as Deployments' replicas would."""
    shape = rng.random()
    app = f"app-{rng.randrange(40)}"
    labels = {"app": app}
    spec: dict[str, Any] = {}
    sla_toleration = {
        "key": SLA,
        "operator": "Gt",
        "value": str(rng.choice([800, 880, 920])),
        "effect": "NoSchedule",
    }
    if shape < 0.30:  # web: cpu only, soft zone spread
        requests = {
            "cpu": rng.choice(["250m", "500m", "1", "2"]),
            "memory": rng.choice(["512Mi", "1Gi", "4Gi"]),
        }
        spec["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": ZONE,
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app": app}},
            }
        ]
    elif shape < 0.55:  # inference: one GPU, a product, an SLA floor
        requests = {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}
        spec["nodeSelector"] = {PRODUCT: rng.choice(["NVIDIA-L4", "NVIDIA-A100-SXM4-40GB"])}
        spec["tolerations"] = [sla_toleration]
    elif shape < 0.58:  # training: a whole NVSwitch machine
        requests = {"cpu": "96", "memory": "800Gi", "nvidia.com/gpu": "8"}
        spec["tolerations"] = [sla_toleration]
        spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": NVLINK, "operator": "Gt", "values": ["7"]}]}
                    ]
                }
            }
        }
    elif shape < 0.68:  # services with a hard zone spread
        requests = {"cpu": "1", "memory": "2Gi"}
        spec["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": ZONE,
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app": app}},
            }
        ]
    elif shape < 0.73:  # caches: never two replicas on one node
        labels = {"app": f"cache-{rng.randrange(10)}"}
        requests = {"cpu": "2", "memory": "8Gi"}
        spec["affinity"] = {
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": labels}, "topologyKey": HOST}
                ]
            }
        }
    elif shape < 0.78:  # sidecars that like to sit near their app
        requests = {"cpu": "500m", "memory": "1Gi"}
        spec["affinity"] = {
            "podAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 50,
                        "podAffinityTerm": {
                            "labelSelector": {"matchLabels": {"app": app}},
                            "topologyKey": ZONE,
                        },
                    }
                ]
            }
        }
    elif shape < 0.83:  # node exporters style: a host port
        requests = {"cpu": "100m", "memory": "128Mi"}
        port = 9100 + rng.randrange(20)
        return {
            "kind": "Pod",
            "metadata": {"name": f"pod-{i:05d}", "namespace": "bench", "labels": labels},
            "spec": {
                "containers": [_container(requests, [{"containerPort": port, "hostPort": port}])]
            },
        }
    else:  # batch: cpu, preferred pool
        requests = {"cpu": rng.choice(["1", "4", "8"]), "memory": rng.choice(["4Gi", "16Gi"])}
        spec["affinity"] = {
            "nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 10,
                        "preference": {
                            "matchExpressions": [
                                {"key": "pool", "operator": "In", "values": ["cpu"]}
                            ]
                        },
                    }
                ]
            }
        }
    spec["containers"] = [_container(requests)]
    return {
        "kind": "Pod",
        "metadata": {"name": f"pod-{i:05d}", "namespace": "bench", "labels": labels},
        "spec": spec,
    }


def generate(nodes: int, pods: int, seed: int = 1) -> tuple[list[Any], list[Any]]:
    rng = random.Random(seed)
    return make_nodes(nodes, rng), [make_pod(i, rng) for i in range(pods)]


def run(nodes: int = 1000, pods: int = 10_000, seed: int = 1) -> dict[str, float]:
    node_dicts, pod_dicts = generate(nodes, pods, seed)
    started = time.perf_counter()
    cluster = ClusterInput(
        nodes=[parse_node(n) for n in node_dicts],
        pending_pods=[parse_pod(p) for p in pod_dicts],
    )
    parsed = time.perf_counter()
    _, results = simulate(cluster, explain=False)  # as the CLI without --explain
    done = time.perf_counter()
    placed = sum(1 for r in results if r.node is not None)
    return {
        "nodes": nodes,
        "pods": pods,
        "placed": placed,
        "unschedulable": pods - placed,
        "parse_seconds": parsed - started,
        "simulate_seconds": done - parsed,
        "pods_per_second": pods / (done - parsed),
        "messages": len(Counter(r.message for r in results if r.node is None)),
    }


@pytest.mark.bench
def test_simulate_1000_nodes_10000_pods(benchmark: Any) -> None:
    stats = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(stats)
    assert stats["placed"] > 0


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    for key, value in run(*args).items():
        print(f"{key:>18}: {value:.3f}" if isinstance(value, float) else f"{key:>18}: {value}")
