"""The cluster cache: incremental updates, assume/forget, pods waiting for their node."""

from __future__ import annotations

from gputopo.scheduler.model import parse_pod
from tests.unit.scheduler.sched_builders import cluster, node, pod, schedule

GPU_NODE = {"cpu": "8", "memory": "32Gi", "pods": "110", "nvidia.com/gpu": "2"}


def _gpu_pod(name: str, node_name: str | None = None) -> dict[str, object]:
    return pod(name, limits={"nvidia.com/gpu": "1"}, node_name=node_name)


def test_assume_counts_load_immediately_and_forget_undoes_it() -> None:
    snapshot = cluster([node("a", allocatable=GPU_NODE)])
    for name in ("p1", "p2"):
        placed = parse_pod(_gpu_pod(name))
        result = schedule(_gpu_pod(name), snapshot)
        assert result.node == "a"
        snapshot.assume(placed, result.node)
        assert snapshot.is_assumed(f"default/{name}")
    assert schedule(_gpu_pod("p3"), snapshot).message == (
        "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    )
    snapshot.forget("default/p2")
    assert schedule(_gpu_pod("p3"), snapshot).node == "a"


def test_watch_event_confirms_assumed_pod_without_double_counting() -> None:
    snapshot = cluster([node("a", allocatable=GPU_NODE)])
    snapshot.assume(parse_pod(_gpu_pod("p1")), "a")
    snapshot.add_pod(_gpu_pod("p1", node_name="a"))
    assert not snapshot.is_assumed("default/p1")
    assert int(snapshot.requested["nvidia.com/gpu"][snapshot.slot_of("a")]) == 1


def test_pod_on_unknown_node_waits_until_the_node_arrives() -> None:
    snapshot = cluster([node("a", allocatable=GPU_NODE)])
    snapshot.add_pod(_gpu_pod("early", node_name="b"))
    snapshot.add_pod(_gpu_pod("early2", node_name="b"))
    assert snapshot.pod("default/early") is not None
    snapshot.add_node(node("b", allocatable=GPU_NODE))
    slot = snapshot.slot_of("b")
    assert slot is not None
    assert int(snapshot.requested["nvidia.com/gpu"][slot]) == 2
    assert int(snapshot.pod_count[slot]) == 2


def test_removing_a_node_drops_its_load_and_keeps_pods_waiting() -> None:
    snapshot = cluster([node("a", allocatable=GPU_NODE), node("b", allocatable=GPU_NODE)])
    snapshot.add_pod(_gpu_pod("p", node_name="b"))
    snapshot.remove_node("b")
    assert snapshot.node_count == 1
    assert schedule(_gpu_pod("q"), snapshot).node == "a"
    snapshot.add_node(node("b", allocatable=GPU_NODE))
    assert int(snapshot.requested["nvidia.com/gpu"][snapshot.slot_of("b") or 0]) == 1


def test_pod_update_moves_load_and_terminal_phase_frees_it() -> None:
    snapshot = cluster([node("a", allocatable=GPU_NODE)])
    snapshot.add_pod(_gpu_pod("p", node_name="a"))
    snapshot.add_pod(_gpu_pod("q", node_name="a"))
    finished = _gpu_pod("q", node_name="a")
    finished["status"] = {"phase": "Failed"}
    snapshot.update_pod(finished)
    assert snapshot.pod("default/q") is None
    assert int(snapshot.requested["nvidia.com/gpu"][0]) == 1
    snapshot.remove_pod("default/p")
    assert int(snapshot.requested["nvidia.com/gpu"][0]) == 0
    assert int(snapshot.pod_count[0]) == 0


def test_node_status_update_keeps_cached_filter_results() -> None:
    snapshot = cluster([node("a", labels={"gpu": "h100"})])
    schedule(pod("p", nodeSelector={"gpu": "h100"}), snapshot)
    generation = snapshot.static_generation
    bigger = node(
        "a", labels={"gpu": "h100"}, allocatable={"cpu": "16", "memory": "32Gi", "pods": "110"}
    )
    snapshot.update_node(bigger)
    assert snapshot.static_generation == generation
    assert int(snapshot.allocatable["cpu"][0]) == 16000
    relabelled = node("a", labels={"gpu": "a100"})
    snapshot.update_node(relabelled)
    assert snapshot.static_generation > generation
    assert schedule(pod("p", nodeSelector={"gpu": "h100"}), snapshot).node is None


def test_anti_affinity_terms_are_released_with_their_pod() -> None:
    anti = {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "labelSelector": {"matchLabels": {"app": "web"}},
                    "topologyKey": "kubernetes.io/hostname",
                }
            ]
        }
    }
    snapshot = cluster([node("a")], [pod("guard", node_name="a", affinity=anti)])
    assert schedule(pod("web", labels={"app": "web"}), snapshot).node is None
    snapshot.remove_pod("default/guard")
    assert schedule(pod("web", labels={"app": "web"}), snapshot).node == "a"


def test_many_nodes_grow_capacity() -> None:
    snapshot = cluster([node(f"n{i:03}") for i in range(50)])
    assert snapshot.node_count == 50
    result = schedule(pod("p", nodeSelector={"kubernetes.io/hostname": "n042"}), snapshot)
    assert result.node == "n042"
