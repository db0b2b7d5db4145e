"""gputopo's DRA allocation against the real kube-scheduler, on the same slices, classes and
claims: allocatable-or-not agrees, every gputopo allocation satisfies every selector and
constraint, and on topology-sensitive cases gputopo's device set is never less aligned than
kube-scheduler's — the share where it is more aligned is reported.

Each trial runs the same sequence of claims twice, on two identical dgx-h100 nodes (8 GPUs, two
NUMA nodes of four), one per scheduler; the trial's pods and claims are deleted before the next.
A trial's earlier pods fragment the node (kube-scheduler takes the first free devices), so a
later multi-GPU claim may fit on one NUMA node only if the earlier choices left one whole.
"""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from gputopo.mocks import resourceslices
from gputopo.mocks.profile import load_profile
from gputopo.scheduler.dra.allocator import claim_satisfied
from gputopo.scheduler.dra.cel import SelectorCache
from gputopo.scheduler.dra.model import (
    AllocationResult,
    parse_device_class,
    parse_resource_claim,
    parse_resource_slice,
)
from gputopo.scheduler.runtime.kube import KubeApiError
from tests.controlplane import ControlPlane, ManagedProcess
from tests.integration.scheduler_env import Cluster, pod_scheduled_condition, running_runtime
from tests.integration.test_dra_allocation import (  # noqa: F401  (dra_objects: a fixture)
    RESOURCE,
    claim_pod,
    dra_objects,
    publish_node,
)
from tests.polling import eventually
from tests.unit.scheduler.dra.dra_builders import claim_object, exactly

pytestmark = pytest.mark.integration

PROFILE = "dgx-h100"
NODES = {"gputopo-scheduler": "diff-gputopo", "default-scheduler": "diff-kube"}
TRIALS = 10
UNSCHEDULABLE_S = 5.0  # past a retry on the deletion events (backoff 1-2 s)
GPU = "gpu.nvidia.com"
SELECTORS = (
    (),
    (f"device.attributes['{GPU}'].cudaComputeCapability.isGreaterThan(semver('8.0.0'))",),
    (f"device.capacity['{GPU}'].memory.compareTo(quantity('200Gi')) >= 0",),  # nothing that big
)


def trial_claims(rng: random.Random) -> list[list[dict[str, Any]]]:
    """Requests of each claim of one trial: some small claims, then a large one."""
    claims = [
        [exactly("gpus", rng.choice((1, 2)), selectors=rng.choice(SELECTORS[:2]))]
        for _ in range(rng.randint(1, 3))
    ]
    claims.append([exactly("gpus", rng.choice((2, 3, 4)), selectors=rng.choice(SELECTORS))])
    return claims


def settle(cluster: Cluster, namespace: str, name: str) -> str | None:
    """The node the pod was bound to, None when its scheduler keeps it unschedulable: refused
    and still unbound UNSCHEDULABLE_S later (a refusal on a cache that had not yet seen the
    last trial's claims go is retried from the queue and must not count)."""
    refused_at: list[float] = []

    def decided() -> tuple[str | None] | None:
        pod = cluster.pod(namespace, name)
        node = pod.get("spec", {}).get("nodeName")
        if node:
            return (str(node),)
        condition = pod_scheduled_condition(pod)
        if condition is not None and condition.get("status") == "False":
            if not refused_at:
                refused_at.append(time.monotonic())
            elif time.monotonic() - refused_at[0] > UNSCHEDULABLE_S:
                return (None,)
        return None

    return eventually(decided, 90, f"{name} bound or unschedulable")[0]


def free_claim(cluster: Cluster, namespace: str, claim: dict[str, Any]) -> None:
    """Deallocate, unprotect and delete a claim whose pods are gone (what the resourceclaim
    controller would do, and may be doing at the same time: a conflict reads it again), so the
    next trial starts with every device free."""
    path = f"{RESOURCE}/namespaces/{namespace}/resourceclaims/{claim['metadata']['name']}"
    for _ in range(10):
        try:
            claim = cluster.api.request("GET", path)
            claim["status"] = {}
            claim = cluster.api.request("PUT", f"{path}/status", body=claim)
            claim["metadata"]["finalizers"] = []
            cluster.api.request("PUT", path, body=claim)
            cluster.api.request("DELETE", path)
            return
        except KubeApiError as err:
            if err.status == 404:
                return
            if err.status != 409:
                raise
    raise AssertionError(f"claim {path} kept changing")


def numa_nodes(devices: list[str]) -> set[int]:
    gpus = load_profile(PROFILE).nvml_gpus()
    return {gpus[int(d.split("-")[1])].numa_node for d in devices}


def test_gputopo_agrees_with_kube_scheduler_and_aligns_better(
    control_plane: ControlPlane,
    cluster: Cluster,
    kube_scheduler: ManagedProcess,
    namespace: str,
    dra_objects: list[str],  # noqa: F811  (the fixture imported above)
    record_property: Any,
) -> None:
    slices = {}
    for node in NODES.values():
        slices[node] = publish_node(cluster, dra_objects, PROFILE, node)
    devices = {
        d.key: d
        for one in slices[NODES["gputopo-scheduler"]]
        for d in parse_resource_slice(one).devices
    }
    classes = {c.name: c for c in map(parse_device_class, resourceslices.device_classes())}
    selectors = SelectorCache()
    rng = random.Random(18)
    agreed = compared = gputopo_aligned = kube_aligned = better = 0
    with running_runtime(control_plane):
        for trial in range(TRIALS):
            for index, requests in enumerate(trial_claims(rng)):
                outcome: dict[str, tuple[str | None, list[str]]] = {}
                for scheduler, node in NODES.items():
                    name = f"t{trial}-{index}-{scheduler[:4]}"
                    claim = claim_object(name, requests, namespace=namespace)
                    cluster.api.request(
                        "POST", f"{RESOURCE}/namespaces/{namespace}/resourceclaims", body=claim
                    )
                    pod = claim_pod(name, [{"name": "g", "resourceClaimName": name}])
                    pod["spec"]["schedulerName"] = scheduler
                    pod["spec"]["nodeSelector"] = {"kubernetes.io/hostname": node}
                    cluster.create_pod(namespace, pod)
                    bound = settle(cluster, namespace, name)
                    written = cluster.api.request(
                        "GET", f"{RESOURCE}/namespaces/{namespace}/resourceclaims/{name}"
                    )
                    results = (written.get("status", {}).get("allocation") or {}).get(
                        "devices", {}
                    ).get("results") or []
                    outcome[scheduler] = (bound, [r["device"] for r in results])
                    if scheduler == "gputopo-scheduler" and bound:
                        parsed = parse_resource_claim(written)
                        problems = claim_satisfied(
                            parsed,
                            [
                                AllocationResult(r["request"], r["driver"], r["pool"], r["device"])
                                for r in results
                            ],
                            devices,
                            classes,
                            selectors,
                        )
                        assert problems == [], (name, problems)
                ours, theirs = outcome["gputopo-scheduler"], outcome["default-scheduler"]
                compared += 1
                agreed += (ours[0] is None) == (theirs[0] is None)
                assert (ours[0] is None) == (theirs[0] is None), (trial, index, outcome)
                if ours[0] and len(ours[1]) > 1:
                    ours_one = len(numa_nodes(ours[1])) == 1
                    theirs_one = len(numa_nodes(theirs[1])) == 1
                    gputopo_aligned += ours_one
                    kube_aligned += theirs_one
                    better += ours_one and not theirs_one
                    assert ours_one or not theirs_one, (trial, index, outcome)
            for pod in cluster.pods(namespace):
                cluster.api.request(
                    "DELETE",
                    f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}",
                    body={"gracePeriodSeconds": 0},
                )
            eventually(lambda: not cluster.pods(namespace), 60, "the trial's pods gone")
            for claim in (
                cluster.api.request("GET", f"{RESOURCE}/namespaces/{namespace}/resourceclaims").get(
                    "items"
                )
                or []
            ):
                free_claim(cluster, namespace, claim)
            eventually(
                lambda: (
                    not cluster.api.request(
                        "GET", f"{RESOURCE}/namespaces/{namespace}/resourceclaims"
                    ).get("items")
                ),
                30,
                "the trial's claims gone",
            )
            time.sleep(1.0)  # both schedulers' watches deliver the deletions
    record_property("dra_differential_compared", compared)
    record_property("dra_differential_agreed", agreed)
    record_property("dra_aligned_gputopo", gputopo_aligned)
    record_property("dra_aligned_kube_scheduler", kube_aligned)
    record_property("dra_more_aligned_than_kube_scheduler", better)
    print(
        f"\nDRA differential: {agreed}/{compared} allocatable-or-not agree; multi-GPU claims "
        f"on one NUMA node: gputopo {gputopo_aligned}, kube-scheduler {kube_aligned}; "
        f"gputopo more aligned in {better}"
    )
    assert agreed == compared
    assert gputopo_aligned >= kube_aligned
