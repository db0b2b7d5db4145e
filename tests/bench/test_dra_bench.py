"""DRA pods: gputopo-scheduler against kube-scheduler, same run, same kind of nodes.

Real kube-apiserver + etcd, 2 x NODES kwok nodes of the dgx-h100 profile (8 GPUs, two NUMA nodes
of four) with the ResourceSlices NVIDIA's DRA driver would publish (mocks/resourceslices.py):
half for each scheduler (nodeSelector), so neither sees the other's claims. PODS pods per
scheduler, each with its own ResourceClaim of 1, 4 or 2 GPUs (in that rotation: 7 of each
node's 8 GPUs when the pods spread evenly, and a 4-GPU claim after a smaller one on the same
node is where first fit crosses NUMA nodes). Reported per scheduler:

* ``pods_per_s``: pods bound per second, from the first pod's creation to the last binding;
* ``aligned_share``: of the multi-GPU claims, the share whose GPUs sit on one NUMA node (all of
  a dgx-h100's GPUs share one NVSwitch domain, so NUMA is what alignment can differ in).

Run: ``make bench BENCH_ARGS="-k dra -s"``; scale with GPUTOPO_BENCH_DRA_NODES /
GPUTOPO_BENCH_DRA_PODS.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from gputopo.mocks.profile import load_profile
from tests.controlplane import ControlPlane, ManagedProcess
from tests.integration.scheduler_env import Cluster, running_runtime
from tests.integration.test_dra_allocation import (  # noqa: F401  (dra_objects: a fixture)
    RESOURCE,
    claim_pod,
    dra_objects,
    publish_node,
)
from tests.unit.scheduler.dra.dra_builders import claim_object, exactly

pytestmark = pytest.mark.bench

NODES = int(os.environ.get("GPUTOPO_BENCH_DRA_NODES", "8"))
PODS = int(os.environ.get("GPUTOPO_BENCH_DRA_PODS", str(NODES * 3)))
SIZES = (1, 4, 2)  # period 3 against 8 nodes: each node sees the sizes in another order
PROFILE = "dgx-h100"


def _run(
    cluster: Cluster, namespace: str, scheduler: str, prefix: str
) -> tuple[float, int, int, int]:
    """(pods per second, bound pods, multi-GPU claims, of them aligned)."""
    for i in range(PODS):
        cluster.api.request(
            "POST",
            f"{RESOURCE}/namespaces/{namespace}/resourceclaims",
            body=claim_object(
                f"{prefix}-{i}", [exactly("gpus", SIZES[i % len(SIZES)])], namespace=namespace
            ),
        )
    started = time.monotonic()
    for i in range(PODS):
        pod = claim_pod(f"{prefix}-{i}", [{"name": "g", "resourceClaimName": f"{prefix}-{i}"}])
        pod["spec"]["schedulerName"] = scheduler
        pod["spec"]["nodeSelector"] = {"bench-scheduler": prefix}
        cluster.create_pod(namespace, pod)
    deadline = started + 600
    bound: dict[str, str] = {}
    while time.monotonic() < deadline:
        for pod in cluster.pods(namespace):
            name = pod["metadata"]["name"]
            if name.startswith(prefix) and pod["spec"].get("nodeName"):
                bound[name] = pod["spec"]["nodeName"]
        if len(bound) >= PODS:
            break
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    gpus = load_profile(PROFILE).nvml_gpus()
    multi = aligned = 0
    for i in range(PODS):
        claim: dict[str, Any] = cluster.api.request(
            "GET", f"{RESOURCE}/namespaces/{namespace}/resourceclaims/{prefix}-{i}"
        )
        results = ((claim.get("status") or {}).get("allocation") or {}).get("devices", {})
        devices = [r["device"] for r in results.get("results") or []]
        if len(devices) > 1:
            multi += 1
            aligned += len({gpus[int(d.split("-")[1])].numa_node for d in devices}) == 1
    return len(bound) / elapsed, len(bound), multi, aligned


def test_dra_pods_per_second_and_aligned_share(
    control_plane: ControlPlane,
    kwok: ManagedProcess,
    kube_scheduler: ManagedProcess,
    namespace: str,
    dra_objects: list[str],  # noqa: F811  (the fixture imported above)
) -> None:
    cluster = Cluster(control_plane)
    try:
        _measure(control_plane, cluster, namespace, created=dra_objects)
    finally:
        cluster.delete_nodes()


def _measure(
    control_plane: ControlPlane, cluster: Cluster, namespace: str, *, created: list[str]
) -> None:
    for prefix in ("kube", "gtopo"):
        for n in range(NODES):
            name = f"bench-{prefix}-{n}"
            publish_node(cluster, created, PROFILE, name)
            cluster.api.request(
                "PATCH",
                f"/api/v1/nodes/{name}",
                body={"metadata": {"labels": {"bench-scheduler": prefix}}},
                content_type="application/merge-patch+json",
            )
    kube = _run(cluster, namespace, "default-scheduler", "kube")
    with running_runtime(control_plane):
        ours = _run(cluster, namespace, "gputopo-scheduler", "gtopo")
    for label, (rate, bound, multi, aligned) in (("kube-scheduler", kube), ("gputopo", ours)):
        share = aligned / multi if multi else 0.0
        print(
            f"\n{label}: {bound}/{PODS} DRA pods bound, {rate:.1f} pods/s, "
            f"aligned {aligned}/{multi} multi-GPU claims ({share:.0%})"
        )
    assert ours[1] == kube[1] == PODS
