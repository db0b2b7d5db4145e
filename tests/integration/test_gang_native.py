"""Gangs of Kubernetes' own PodGroup (`scheduling.k8s.io/v1beta1`, gate GenericWorkload) on a real
API server: gputopo-scheduler's runtime alone, and against kube-scheduler's own GangScheduling
plugin (on when the gate is) on the same cases.

Each scheduler gets a pool of kwok nodes of its own (a node label its pods select), so the two
never compete for room. "No member binds alone" is checked after a witness: a plain CPU pod
created after the gang in the same pool and queue; once it is bound the scheduler has looked at
the gang's pods.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gputopo.scheduler.runtime.kube import JsonDict
from gputopo.scheduler.runtime.runner import SchedulerRuntime
from tests.controlplane import ControlPlane, ManagedProcess
from tests.integration.scheduler_env import Cluster, gpu_node, gpu_pod, running_runtime
from tests.polling import eventually

pytestmark = pytest.mark.integration

PODGROUPS = "/apis/scheduling.k8s.io/v1beta1/namespaces/{namespace}/podgroups"
POOL = "gputopo.io/test-pool"
CLIQUE = "nvidia.com/gpu.clique"
GPUTOPO = "gputopo-scheduler"
KUBE = "default-scheduler"


@pytest.fixture
def runtime(control_plane: ControlPlane) -> Iterator[SchedulerRuntime]:
    with running_runtime(control_plane) as started:
        yield started


def _pod_group(
    cluster: Cluster, namespace: str, name: str, min_count: int, topology_key: str = ""
) -> None:
    spec: JsonDict = {"schedulingPolicy": {"gang": {"minCount": min_count}}}
    if topology_key:
        spec["schedulingConstraints"] = {"topology": [{"key": topology_key}]}
    body = {
        "apiVersion": "scheduling.k8s.io/v1beta1",
        "kind": "PodGroup",
        "metadata": {"name": name},
        "spec": spec,
    }
    cluster.api.request("POST", PODGROUPS.format(namespace=namespace), body=body)


def _member(group: str, index: int, gpus: int, scheduler: str, pool: str) -> JsonDict:
    pod = gpu_pod(f"{group}-{index}", gpus, scheduler_name=scheduler, node_selector={POOL: pool})
    pod["spec"]["schedulingGroup"] = {"podGroupName": group}
    return pod


def _bound(cluster: Cluster, namespace: str, group: str) -> dict[str, str]:
    return {
        pod["metadata"]["name"]: str(pod["spec"]["nodeName"])
        for pod in cluster.pods(namespace)
        if (pod["spec"].get("schedulingGroup") or {}).get("podGroupName") == group
        and pod["spec"].get("nodeName")
    }


def _condition(cluster: Cluster, namespace: str, name: str) -> JsonDict | None:
    path = f"{PODGROUPS.format(namespace=namespace)}/{name}"
    conditions = (cluster.api.request("GET", path).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "PodGroupInitiallyScheduled"), None)


def _pool(cluster: Cluster, pool: str, *gpus: int) -> None:
    for index, count in enumerate(gpus):
        cluster.create_node(gpu_node(f"{pool}-{index}", count, labels={POOL: pool}))


def test_no_member_binds_until_min_count_pods_exist_then_all_bind_and_the_condition_is_set(
    cluster: Cluster, namespace: str, runtime: SchedulerRuntime
) -> None:
    _pool(cluster, "wait", 4, 4)
    _pod_group(cluster, namespace, "train", 8)
    for index in range(7):
        cluster.create_pod(namespace, _member("train", index, 1, GPUTOPO, "wait"))
    eventually(
        lambda: [
            e
            for e in cluster.events(namespace)
            if "waiting for minCount pods from a gang" in str(e.get("note"))
        ],
        30,
        "kube-scheduler's words for a gang short of minCount",
    )
    assert _bound(cluster, namespace, "train") == {}
    cluster.create_pod(namespace, _member("train", 7, 1, GPUTOPO, "wait"))
    eventually(lambda: len(_bound(cluster, namespace, "train")) == 8, 30, "all 8 members bound")
    condition = eventually(
        lambda: (c := _condition(cluster, namespace, "train")) and c["status"] == "True" and c,
        30,
        "PodGroupInitiallyScheduled True",
    )
    assert condition["reason"] == "Scheduled"


def test_the_topology_constraint_keeps_the_gang_in_one_clique(
    cluster: Cluster, namespace: str, runtime: SchedulerRuntime
) -> None:
    # Clique a: two 4-GPU nodes (8 GPUs); clique b: one 8-GPU node already half used by a pod
    # outside the gang, so the gang (4 x 2 GPUs) fits whole only in clique a.
    for name, gpus, clique in (("topo-a0", 4, "a"), ("topo-a1", 4, "a"), ("topo-b0", 8, "b")):
        cluster.create_node(gpu_node(name, gpus, labels={POOL: "topo", CLIQUE: clique}))
    filler = gpu_pod("filler", 4, node_selector={POOL: "topo"})
    filler["spec"]["nodeName"] = "topo-b0"
    cluster.create_pod(namespace, filler)
    _pod_group(cluster, namespace, "ring", 4, topology_key=CLIQUE)
    for index in range(4):
        cluster.create_pod(namespace, _member("ring", index, 2, GPUTOPO, "topo"))
    eventually(lambda: len(_bound(cluster, namespace, "ring")) == 4, 60, "the gang bound")
    assert set(_bound(cluster, namespace, "ring").values()) == {"topo-a0", "topo-a1"}


def test_a_gang_turned_away_says_why_on_its_podgroup(
    cluster: Cluster, namespace: str, runtime: SchedulerRuntime
) -> None:
    _pool(cluster, "short", 4, 3)
    _pod_group(cluster, namespace, "big", 8)
    for index in range(8):
        cluster.create_pod(namespace, _member("big", index, 1, GPUTOPO, "short"))
    condition = eventually(
        lambda: (c := _condition(cluster, namespace, "big")) and c["status"] == "False" and c,
        60,
        "PodGroupInitiallyScheduled False",
    )
    assert condition["reason"] == "Unschedulable"
    assert _bound(cluster, namespace, "big") == {}


# -- the same cases under kube-scheduler's own gang scheduling ------------------------------------

CASES = {
    # name: (node GPUs, members, minCount, whether the gang places)
    "complete": ((4, 4), 8, 8, True),
    "too-big": ((4, 3), 8, 8, False),
    "incomplete": ((4, 4), 7, 8, False),
    "min-below-size": ((4, 2), 8, 6, True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_gputopo_and_kube_scheduler_agree_whether_a_gang_places_and_never_bind_half(
    cluster: Cluster,
    namespace: str,
    runtime: SchedulerRuntime,
    kube_scheduler: ManagedProcess,
    case: str,
) -> None:
    gpus, members, min_count, places = CASES[case]
    outcomes: dict[str, int] = {}
    for scheduler in (GPUTOPO, KUBE):
        pool = f"{case}-{'g' if scheduler == GPUTOPO else 'k'}"
        group = f"gang-{'g' if scheduler == GPUTOPO else 'k'}"
        _pool(cluster, pool, *gpus)
        _pod_group(cluster, namespace, group, min_count)
        for index in range(members):
            cluster.create_pod(namespace, _member(group, index, 1, scheduler, pool))
        if places:
            eventually(
                lambda group=group: len(_bound(cluster, namespace, group)) >= min_count,
                60,
                f"{scheduler} placed the gang",
            )
        else:
            _witness_name = f"witness-{group}"
            witness = gpu_pod(
                _witness_name, 0, scheduler_name=scheduler, node_selector={POOL: pool}
            )
            cluster.create_pod(namespace, witness)
            eventually(
                lambda name=_witness_name: cluster.node_of(namespace, name),
                60,
                f"{scheduler}'s witness bound",
            )
        outcomes[scheduler] = len(_bound(cluster, namespace, group))
    # Whether the gang places agrees; a gang is bound whole (at least minCount) or not at all.
    assert (outcomes[GPUTOPO] >= min_count) == (outcomes[KUBE] >= min_count) == places, outcomes
    for scheduler, count in outcomes.items():
        assert count == 0 or count >= min_count, (
            f"{scheduler} bound {count} of a gang of {min_count}"
        )
