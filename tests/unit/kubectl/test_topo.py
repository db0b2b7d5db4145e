"""``topo NODE``: the annotation drawn by the agent's renderer, and one line when it cannot be."""

from __future__ import annotations

import pytest

from gputopo.core.cli import EXIT_FAILURE, CliError
from gputopo.kubectl.topo import node_topology_text
from tests.unit.agent.machines import a100_mig, dgx_h100, one_g, three_g
from tests.unit.kubectl.kube_objects import node, two_domain_h100


def test_dgx_h100_annotation_is_drawn_like_discover_text() -> None:
    text = node_topology_text(node("dgx-1", dgx_h100()))
    assert text.startswith("Host:         dgx-1\n")
    assert "Interconnect: nvswitch   (8 GPU(s), 1 NVLink domain(s), 2 NUMA node(s)" in text
    assert "  0   nvswitch  0-7   ?" in text  # the domain; per-GPU links are not annotated
    gpu0 = next(line for line in text.splitlines() if line.startswith("  GPU0 "))
    assert gpu0.split()[1:9] == ["X"] + ["NV?"] * 7
    assert "NV? = one NVLink domain, links not known" in text


def test_two_domains_meet_over_pcie_and_numa() -> None:
    text = node_topology_text(node("h100-2x4", two_domain_h100()))
    gpu0 = next(line for line in text.splitlines() if line.startswith("  GPU0 "))
    # GPUs 1-3 share GPU0's NVLink domain; 4-7 are on the other NUMA node.
    assert gpu0.split()[1:9] == ["X", "NV?", "NV?", "NV?", "SYS", "SYS", "SYS", "SYS"]


def test_mig_layout_is_drawn() -> None:
    text = node_topology_text(node("a100", a100_mig({0: (one_g(1, 0), three_g(2, 4)), 1: None})))
    assert "MIG instances" in text and "3g.20gb" in text


def test_node_without_annotation_is_one_line() -> None:
    with pytest.raises(CliError) as error:
        node_topology_text(node("cpu-1", gpus=0))
    assert str(error.value) == (
        "node 'cpu-1' has no gputopo.io/topology annotation (is the gputopo agent running on it?)"
    )
    assert error.value.status == EXIT_FAILURE


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        ("{not json", "not valid JSON"),
        ('{"v": 7, "interconnect": "pcie"}', "version 7 is not supported"),
        ('{"v": 1, "interconnect": "ethernet"}', "interconnect: expected one of nvswitch"),
        ('{"v": 1, "interconnect": "pcie", "gpus": [{"index": "zero"}]}', "gpus[0]"),
    ],
)
def test_malformed_annotation_is_one_line_naming_node_and_key(
    annotation: str, expected: str
) -> None:
    with pytest.raises(CliError) as error:
        node_topology_text(node("gpu-9", annotation=annotation))
    message = str(error.value)
    assert message.startswith("node 'gpu-9': annotation gputopo.io/topology: ")
    assert expected in message and "\n" not in message
