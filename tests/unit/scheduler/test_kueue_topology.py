"""Kueue Topology levels from the labels the GPU nodes carry: presence, order, nesting, gaps."""

from __future__ import annotations

import pytest

from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.kueue_topology import KUEUE_API_VERSION, export_topology
from gputopo.scheduler.model import Node, parse_node
from tests.unit.scheduler.ext_builders import gpu_node

CLIQUE = "nvidia.com/gpu.clique"
RACK = "topology.kubernetes.io/rack"
BLOCK = "topology.kubernetes.io/block"
HOST = "kubernetes.io/hostname"


def _node(name: str) -> Node:
    return _labelled(name, {})


def _labelled(name: str, labels: dict[str, str], gpus: int = 4) -> Node:
    obj = gpu_node(name, gpus=gpus)
    obj["metadata"]["labels"] = {HOST: name, **labels}
    return parse_node(obj)


def test_levels_are_the_present_keys_broadest_first_then_the_hostname() -> None:
    nodes = [
        _labelled(f"n{i}", {CLIQUE: f"c{i // 2}", RACK: f"r{i // 4}", BLOCK: "b0"})
        for i in range(8)
    ]
    export = export_topology(nodes)
    assert export.levels == (BLOCK, RACK, CLIQUE, HOST)
    assert export.notes == ()
    assert export.nodes == 8
    obj = export.to_object()
    assert obj["apiVersion"] == KUEUE_API_VERSION
    assert obj["kind"] == "Topology"
    assert obj["metadata"]["name"] == "gputopo"
    assert obj["spec"]["levels"] == [{"nodeLabel": key} for key in (BLOCK, RACK, CLIQUE, HOST)]


def test_a_key_that_does_not_nest_is_left_out_with_a_note_naming_the_straddling_value() -> None:
    # Clique c1 has one node in rack r0 and one in rack r1: not a tree under racks.
    nodes = [
        _labelled("n0", {RACK: "r0", CLIQUE: "c0"}),
        _labelled("n1", {RACK: "r0", CLIQUE: "c1"}),
        _labelled("n2", {RACK: "r1", CLIQUE: "c1"}),
        _labelled("n3", {RACK: "r1", CLIQUE: "c2"}),
    ]
    export = export_topology(nodes)
    assert export.levels == (RACK, HOST)
    assert len(export.notes) == 1
    assert export.notes[0].startswith(f"label {CLIQUE} left out: {CLIQUE}=c1 spans {RACK}=r0")
    assert "(node n1)" in export.notes[0] and "(node n2)" in export.notes[0]


def test_nodes_lacking_a_level_are_named() -> None:
    nodes = [_labelled("n0", {CLIQUE: "c0"}), _labelled("n1", {CLIQUE: "c0"}), _node("lone")]
    export = export_topology(nodes)
    assert export.levels == (CLIQUE, HOST)
    assert export.missing == {CLIQUE: ("lone",)}
    assert export.notes == (
        f"level {CLIQUE}: 1 of 3 nodes lack it (lone); "
        "Kueue's topology-aware scheduling leaves them out",
    )


def test_only_gpu_nodes_count_unless_all_nodes_is_asked() -> None:
    nodes = [_labelled("gpu", {RACK: "r0"}), _labelled("cpu", {RACK: "r9"}, gpus=0)]
    assert export_topology(nodes).nodes == 1
    assert export_topology(nodes).missing == {}
    assert export_topology(nodes, all_nodes=True).nodes == 2


def test_a_cluster_without_topology_labels_gets_the_hostname_level_and_says_so() -> None:
    export = export_topology([_node("n0"), _node("n1")])
    assert export.levels == (HOST,)
    assert export.notes[-1].startswith("no topology label found on the nodes (looked for: ")


def test_a_users_own_level_key_is_considered() -> None:
    nodes = [_labelled(f"n{i}", {"example.com/pod-row": f"row{i // 2}"}) for i in range(4)]
    assert export_topology(nodes).levels == (HOST,)
    assert export_topology(nodes, extra_keys=["example.com/pod-row"]).levels == (
        "example.com/pod-row",
        HOST,
    )


@pytest.mark.parametrize("key", ["not a key!", HOST, ""])
def test_a_bad_level_key_is_one_line_naming_it(key: str) -> None:
    with pytest.raises(SchedulerInputError, match=r"^--level "):
        export_topology([_node("n0")], extra_keys=[key])


def test_no_gpu_node_at_all_is_an_error() -> None:
    with pytest.raises(SchedulerInputError, match="no GPU nodes"):
        export_topology([_labelled("cpu", {}, gpus=0)])
