"""DynamicResources: claims resolved in PreFilter, allocated per node in Filter, tiers scored."""

from __future__ import annotations

from typing import Any

from gputopo.mocks import resourceslices
from gputopo.mocks.profile import load_profile
from gputopo.scheduler.dra.state import DraState
from gputopo.scheduler.framework import schedule_one
from gputopo.scheduler.model import parse_pod
from gputopo.scheduler.snapshot import ClusterSnapshot
from tests.unit.scheduler.dra.dra_builders import claim_object, exactly, node_object


def _pod(claim: str) -> Any:
    return parse_pod(
        {
            "metadata": {"name": "p", "namespace": "default", "uid": "u"},
            "spec": {
                "containers": [{"name": "c", "image": "x"}],
                "resourceClaims": [{"name": "g", "resourceClaimName": claim}],
            },
        }
    )


def _snapshot(state: DraState, *nodes: str) -> ClusterSnapshot:
    snapshot = ClusterSnapshot()
    for name in nodes:
        snapshot.add_node(node_object("dgx-h100", name))
        for one in resourceslices.resource_slices(load_profile("dgx-h100"), name):
            state.observe("ResourceSlice", one)
    for device_class in resourceslices.device_classes():
        state.observe("DeviceClass", device_class)
    snapshot.attach(state)
    return snapshot


def _allocated_on(node: str) -> dict[str, Any]:
    claim = claim_object("c", [exactly("g", 2)])
    claim["status"] = {
        "allocation": {
            "devices": {
                "results": [
                    {"request": "g", "driver": "gpu.nvidia.com", "pool": node, "device": "gpu-0"}
                ]
            },
            "nodeSelector": {
                "nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
                ]
            },
        }
    }
    return claim


def test_an_allocated_claim_pins_the_pod_to_its_node() -> None:
    state = DraState()
    state.watched = True
    snapshot = _snapshot(state, "a", "b")
    state.observe("ResourceClaim", _allocated_on("b"))
    result = schedule_one(_pod("c"), snapshot)
    assert result.node == "b"
    assert "DynamicResources" in result.diagnosis()["a"].reasons[0]


def test_a_claim_nobody_created_is_kube_schedulers_message() -> None:
    state = DraState()
    state.watched = True
    result = schedule_one(_pod("missing"), _snapshot(state, "a"))
    assert result.node is None
    assert result.message.endswith('resourceclaim "missing" not found.')


def test_without_a_dra_watch_the_plugin_has_no_opinion() -> None:
    # the extender's cache: kube-scheduler allocates, the node is not refused for the claim
    state = DraState()
    result = schedule_one(_pod("missing"), _snapshot(state, "a"))
    assert result.node == "a"


def test_an_api_server_without_dra_refuses_by_name() -> None:
    state = DraState()
    state.unavailable = "the API server does not serve resource.k8s.io/v1"
    result = schedule_one(_pod("c"), _snapshot(state, "a"))
    assert result.node is None
    assert "does not serve resource.k8s.io/v1" in result.message


def test_aligned_node_scores_above_a_fragmented_one() -> None:
    state = DraState()
    state.watched = True
    snapshot = _snapshot(state, "a", "b")
    # node a: one GPU taken on each NUMA node, so 4 GPUs cannot stay on one
    taken = claim_object("taken", [exactly("g", 2)])
    taken["status"] = {
        "allocation": {
            "devices": {
                "results": [
                    {"request": "g", "driver": "gpu.nvidia.com", "pool": "a", "device": "gpu-0"},
                    {"request": "g", "driver": "gpu.nvidia.com", "pool": "a", "device": "gpu-4"},
                ]
            }
        }
    }
    state.observe("ResourceClaim", taken)
    state.observe("ResourceClaim", claim_object("four", [exactly("g", 4)]))
    result = schedule_one(_pod("four"), snapshot)
    assert result.node == "b"
    diagnosis = result.diagnosis()
    assert (
        diagnosis["b"].plugin_scores["DynamicResources"]
        > (diagnosis["a"].plugin_scores["DynamicResources"])
    )
