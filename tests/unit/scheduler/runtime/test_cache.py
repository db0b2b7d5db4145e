"""Assumed pods: counted from the moment of placement, confirmed, forgotten or expired."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gputopo.scheduler.model import LabelSelector, Requirement
from gputopo.scheduler.runtime.cache import ClusterCache
from gputopo.scheduler.runtime.core_adapter import CoreFramework

GPU = "nvidia.com/gpu"


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def gpu_node(name: str, gpus: int = 8) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"allocatable": {"cpu": "64", "memory": "512Gi", "pods": "110", GPU: str(gpus)}},
    }


def gpu_pod(name: str, gpus: int, node: str = "", phase: str = "Pending") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "schedulerName": "gputopo-scheduler",
        "containers": [{"name": "main", "resources": {"limits": {GPU: str(gpus)}}}],
    }
    if node:
        spec["nodeName"] = node
    return {
        "metadata": {"namespace": "train", "name": name, "uid": f"uid-{name}"},
        "spec": spec,
        "status": {"phase": phase},
    }


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture()
def framework() -> CoreFramework:
    return CoreFramework()


@pytest.fixture()
def cache(framework: CoreFramework, clock: FakeClock) -> ClusterCache:
    cache = ClusterCache(framework, assume_ttl_s=30.0, clock=clock)
    cache.upsert_node(gpu_node("dgx-a"))
    cache.upsert_node(gpu_node("dgx-b"))
    return cache


def gpus_used(framework: CoreFramework, node: str) -> int:
    slot = framework.snapshot.slot_of(node)
    assert slot is not None
    _, requested = framework.snapshot.resource_arrays(GPU)
    return int(requested[slot]) if len(requested) else 0


def test_assumed_pod_counts_before_the_binding_is_confirmed(
    cache: ClusterCache, framework: CoreFramework
) -> None:
    cache.assume(gpu_pod("llama-0", 8), "dgx-a")
    assert gpus_used(framework, "dgx-a") == 8
    assert cache.is_assumed("train/llama-0")


def test_watch_confirmation_replaces_the_assumption(
    cache: ClusterCache, framework: CoreFramework
) -> None:
    cache.assume(gpu_pod("llama-0", 8), "dgx-a")
    cache.upsert_bound_pod(gpu_pod("llama-0", 8, node="dgx-a", phase="Running"))
    assert not cache.is_assumed("train/llama-0")
    assert gpus_used(framework, "dgx-a") == 8


def test_pod_bound_elsewhere_by_someone_else_moves_its_load(
    cache: ClusterCache, framework: CoreFramework
) -> None:
    cache.assume(gpu_pod("llama-0", 4), "dgx-a")
    cache.upsert_bound_pod(gpu_pod("llama-0", 4, node="dgx-b"))
    assert (gpus_used(framework, "dgx-a"), gpus_used(framework, "dgx-b")) == (0, 4)


def test_forget_after_a_failed_binding_frees_the_gpus(
    cache: ClusterCache, framework: CoreFramework
) -> None:
    cache.assume(gpu_pod("llama-0", 8), "dgx-a")
    cache.forget("train/llama-0")
    assert gpus_used(framework, "dgx-a") == 0
    assert cache.assumed_count() == 0


def test_unconfirmed_binding_expires_after_the_ttl(
    cache: ClusterCache, framework: CoreFramework, clock: FakeClock
) -> None:
    cache.assume(gpu_pod("llama-0", 8), "dgx-a")
    clock.now += 3600
    assert cache.expire_assumptions() == []  # binding still in flight: never expires
    cache.finish_binding("train/llama-0")
    clock.now += 29
    assert cache.expire_assumptions() == []
    clock.now += 1
    assert cache.expire_assumptions() == ["train/llama-0"]
    assert gpus_used(framework, "dgx-a") == 0


def test_confirmed_pod_never_expires(
    cache: ClusterCache, framework: CoreFramework, clock: FakeClock
) -> None:
    cache.assume(gpu_pod("llama-0", 8), "dgx-a")
    cache.finish_binding("train/llama-0")
    cache.upsert_bound_pod(gpu_pod("llama-0", 8, node="dgx-a", phase="Running"))
    clock.now += 3600
    assert cache.expire_assumptions() == []
    assert gpus_used(framework, "dgx-a") == 8


def test_finished_pod_frees_its_gpus(cache: ClusterCache, framework: CoreFramework) -> None:
    cache.upsert_bound_pod(gpu_pod("eval-0", 2, node="dgx-b", phase="Running"))
    assert gpus_used(framework, "dgx-b") == 2
    cache.upsert_bound_pod(gpu_pod("eval-0", 2, node="dgx-b", phase="Succeeded"))
    assert gpus_used(framework, "dgx-b") == 0


def test_pod_deleted_while_assumed_frees_its_gpus(
    cache: ClusterCache, framework: CoreFramework
) -> None:
    cache.assume(gpu_pod("llama-0", 8), "dgx-a")
    cache.delete_pod(gpu_pod("llama-0", 8))
    assert gpus_used(framework, "dgx-a") == 0
    assert not cache.is_assumed("train/llama-0")


def test_assuming_an_already_bound_pod_is_refused(cache: ClusterCache) -> None:
    cache.upsert_bound_pod(gpu_pod("llama-0", 8, node="dgx-a"))
    with pytest.raises(ValueError, match="train/llama-0: already bound to node dgx-a"):
        cache.assume(gpu_pod("llama-0", 8), "dgx-b")


def test_confirmation_of_an_unchanged_pod_keeps_the_cores_copy(
    cache: ClusterCache, framework: CoreFramework, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache.assume(gpu_pod("llama-0", 8), "dgx-a")
    entry = framework.snapshot.pods["train/llama-0"]
    monkeypatch.setattr(framework, "upsert_pod", _must_not_be_called)
    cache.upsert_bound_pod(gpu_pod("llama-0", 8, node="dgx-a", phase="Running"))
    assert not cache.is_assumed("train/llama-0")
    assert not framework.snapshot.is_assumed("train/llama-0")
    assert framework.snapshot.pods["train/llama-0"] is entry  # not re-parsed, not re-attached
    assert cache.bound_pods()[0]["status"]["phase"] == "Running"  # the watch's version is kept


def test_confirmation_with_a_changed_spec_replaces_the_cores_copy(
    cache: ClusterCache, framework: CoreFramework
) -> None:
    cache.assume(gpu_pod("llama-0", 8), "dgx-a")
    cache.upsert_bound_pod(gpu_pod("llama-0", 2, node="dgx-a"))  # resized before the echo
    assert not framework.snapshot.is_assumed("train/llama-0")
    assert gpus_used(framework, "dgx-a") == 2


def test_finished_pod_confirming_an_assumption_frees_its_gpus(
    cache: ClusterCache, framework: CoreFramework
) -> None:
    cache.assume(gpu_pod("llama-0", 8), "dgx-a")
    cache.upsert_bound_pod(gpu_pod("llama-0", 8, node="dgx-a", phase="Failed"))
    assert gpus_used(framework, "dgx-a") == 0


def test_expiry_skips_the_scan_until_a_deadline_is_due(
    cache: ClusterCache, clock: FakeClock
) -> None:
    for name in ("a", "b"):
        cache.assume(gpu_pod(name, 1), "dgx-a")
        cache.finish_binding(f"train/{name}")
        clock.now += 10
    cache.upsert_bound_pod(gpu_pod("a", 1, node="dgx-a"))  # the earliest one is confirmed
    clock.now += 11  # a's old deadline has passed, b's has not
    assert cache.expire_assumptions() == []
    clock.now += 10
    assert cache.expire_assumptions() == ["train/b"]
    clock.now += 3600
    assert cache.expire_assumptions() == []


def test_topology_labels_added_by_the_binding_are_indexed_in_place(
    cache: ClusterCache, framework: CoreFramework, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache.assume(gpu_pod("llama-0", 1), "dgx-a")
    monkeypatch.setattr(framework, "upsert_pod", _must_not_be_called)
    bound = gpu_pod("llama-0", 1, node="dgx-a")
    bound["metadata"]["labels"] = {"topology.kubernetes.io/zone": "zone-a"}
    cache.upsert_bound_pod(bound)
    selector = LabelSelector(
        (Requirement("topology.kubernetes.io/zone", "In", frozenset({"zone-a"}), None),)
    )
    assert [e.pod.key for e in framework.snapshot.pods_matching("train", selector)] == [
        "train/llama-0"
    ]


def test_relabelled_pod_whose_terms_read_its_labels_is_re_added(
    cache: ClusterCache, framework: CoreFramework
) -> None:
    pod = gpu_pod("llama-0", 1)
    pod["metadata"]["labels"] = {"app": "llama"}
    pod["spec"]["affinity"] = {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "labelSelector": {"matchLabels": {"app": "llama"}},
                    "topologyKey": "kubernetes.io/hostname",
                    "matchLabelKeys": ["topology.kubernetes.io/zone"],
                }
            ]
        }
    }
    cache.assume(pod, "dgx-a")
    bound = copy.deepcopy(pod)
    bound["spec"]["nodeName"] = "dgx-a"
    bound["metadata"]["labels"]["topology.kubernetes.io/zone"] = "zone-a"
    cache.upsert_bound_pod(bound)
    entry = framework.snapshot.pods["train/llama-0"]
    assert entry.pod.labels["topology.kubernetes.io/zone"] == "zone-a"
    assert not framework.snapshot.is_assumed("train/llama-0")


def _must_not_be_called(*_: object) -> None:
    raise AssertionError("the confirmation re-parsed the pod")


def test_status_update_of_a_bound_pod_replaces_the_kept_version_without_reparsing(
    cache: ClusterCache, framework: CoreFramework, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache.upsert_bound_pod(gpu_pod("llama-0", 8, node="dgx-a"))
    running = gpu_pod("llama-0", 8, node="dgx-a", phase="Running")
    monkeypatch.setattr(framework, "upsert_pod", _must_not_be_called)
    cache.refresh_bound_pod(running)
    assert cache.bound_pods() == [running]
    assert cache.bound_pods()[0] is running  # the old version is no longer held
    assert gpus_used(framework, "dgx-a") == 8


def test_status_update_of_a_pod_not_counted_adds_nothing(
    cache: ClusterCache, framework: CoreFramework
) -> None:
    cache.refresh_bound_pod(gpu_pod("unknown", 8, node="dgx-a", phase="Running"))
    cache.upsert_bound_pod(gpu_pod("done", 8, node="dgx-a", phase="Failed"))
    cache.refresh_bound_pod(gpu_pod("done", 8, node="dgx-a", phase="Failed"))
    assert cache.bound_pods() == []
    assert gpus_used(framework, "dgx-a") == 0
