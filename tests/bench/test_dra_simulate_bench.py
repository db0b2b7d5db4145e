"""Offline DRA placement: `simulate` on dgx-h100 nodes with their ResourceSlices and pods whose
claims come from templates of 1, 2 and 4 GPUs (rotation 1, 1, 2, 4), every node evaluated for
every pod. Reports pods/s and the share of multi-GPU claims kept on one NUMA node.

Run: ``make bench BENCH_ARGS="-k dra_simulate -s"``, or
``PYTHONPATH=. .venv/bin/python tests/bench/test_dra_simulate_bench.py [nodes] [pods]``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from gputopo.mocks import resourceslices
from gputopo.mocks.profile import load_profile
from gputopo.scheduler.simulate import load_cluster, simulate
from tests.unit.scheduler.dra.dra_builders import exactly, node_object

pytestmark = pytest.mark.bench

PROFILE = "dgx-h100"
SIZES = (1, 1, 2, 4)


def cluster_documents(nodes: int, pods: int) -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = [*resourceslices.device_classes()]
    profile = load_profile(PROFILE)
    for n in range(nodes):
        documents.append(node_object(PROFILE, f"n{n}"))
        documents.extend(resourceslices.resource_slices(profile, f"n{n}"))
    for size in sorted(set(SIZES)):
        documents.append(
            {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "ResourceClaimTemplate",
                "metadata": {"name": f"g{size}", "namespace": "default"},
                "spec": {"spec": {"devices": {"requests": [exactly("gpus", size)]}}},
            }
        )
    for i in range(pods):
        template = f"g{SIZES[i % len(SIZES)]}"
        documents.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"p{i}", "namespace": "default", "uid": f"u{i}"},
                "spec": {
                    "containers": [{"name": "c", "image": "x"}],
                    "resourceClaims": [{"name": "g", "resourceClaimTemplateName": template}],
                },
            }
        )
    return documents


def run(nodes: int, pods: int) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cluster.yaml"
        path.write_text(yaml.safe_dump_all(cluster_documents(nodes, pods)))
        cluster = load_cluster([path])
    started = time.perf_counter()
    _, results = simulate(cluster, explain=False)
    elapsed = time.perf_counter() - started
    gpus = load_profile(PROFILE).nvml_gpus()
    placed = [r for r in results if r.node]
    multi = aligned = 0
    for result in placed:
        for devices in (result.claims or {}).values():
            if len(devices) > 1:
                multi += 1
                numa = {gpus[int(d["device"].split("-")[1])].numa_node for d in devices}
                aligned += len(numa) == 1
    return (
        f"{nodes} nodes, {pods} pods: {len(placed)} placed in {elapsed:.2f} s = "
        f"{pods / elapsed:.1f} pods/s; aligned {aligned}/{multi} multi-GPU claims"
    )


def test_dra_simulate_throughput() -> None:
    print("\n" + run(30, 90))


if __name__ == "__main__":
    print(
        run(
            int(sys.argv[1]) if len(sys.argv) > 1 else 100,
            int(sys.argv[2]) if len(sys.argv) > 2 else 300,
        )
    )
