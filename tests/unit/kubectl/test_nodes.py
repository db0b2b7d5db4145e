"""The GPU node table: free GPUs per NVLink domain as the scheduler counts them."""

from __future__ import annotations

import json
from dataclasses import replace

import yaml

from gputopo.agent.topology import Health
from gputopo.core.contract import DEFAULT_CONTRACT
from gputopo.kubectl.nodes import gpu_node_rows, is_gpu_node, render_document, render_table
from tests.unit.agent.machines import a100_mig, dgx_h100, one_g, three_g
from tests.unit.kubectl.kube_objects import node, pod, two_domain_h100

C = DEFAULT_CONTRACT


def test_free_gpus_per_nvlink_domain_count_the_bound_pods_requests() -> None:
    nodes = [node("h100-a", two_domain_h100(), labels={C.gpu_model: "H100", C.sla: "990"})]
    pods = [pod("train-0", 3, "h100-a"), pod("train-1", 2, "h100-a")]
    [row] = gpu_node_rows(nodes, pods)
    assert (row.name, row.model, row.gpus, row.free, row.sla) == ("h100-a", "H100", 8, 3, 990)
    # The scheduler's allocator packs each pod into one domain: 3 from one, 2 from the other.
    free_per_domain = sorted(len(d.free) for d in row.domains)
    assert free_per_domain == [1, 2]
    assert [d.gpus for d in row.domains] == [(0, 1, 2, 3), (4, 5, 6, 7)]
    assert row.layout == "annotation"


def test_finished_pending_and_foreign_node_pods_hold_nothing() -> None:
    nodes = [node("h100-a", dgx_h100())]
    pods = [
        pod("done", 4, "h100-a", phase="Succeeded"),
        pod("failed", 4, "h100-a", phase="Failed"),
        pod("pending", 4),
        pod("elsewhere", 4, "cpu-node"),
        pod("running", 1, "h100-a"),
    ]
    [row] = gpu_node_rows(nodes, pods)
    assert row.free == 7
    assert [(d.label, len(d.free), len(d.gpus)) for d in row.domains] == [("nvl0", 7, 8)]


def test_a_failed_gpu_is_neither_free_nor_counted_in_its_domain() -> None:
    topology = dgx_h100()
    sick = replace(topology.gpus[2], health=Health.FAILED)
    topology = replace(topology, gpus=(*topology.gpus[:2], sick, *topology.gpus[3:]))
    [row] = gpu_node_rows([node("h100-a", topology)], [])
    assert row.free == 7
    assert 2 not in row.domains[0].gpus


def test_only_nodes_the_agent_describes_are_gpu_nodes() -> None:
    cpu = node("cpu-1", gpus=0, labels={C.gpu_present: "false"})
    unlabelled = node("gpu-no-agent", gpus=8)
    by_label = node("gpu-labels", gpus=4, labels={C.gpu_present: "true"})
    assert not is_gpu_node(cpu) and not is_gpu_node(unlabelled) and is_gpu_node(by_label)
    rows = gpu_node_rows([cpu, unlabelled, by_label, node("b-annotated", dgx_h100())], [])
    assert [row.name for row in rows] == ["b-annotated", "gpu-labels"]
    labels_row = rows[1]
    # No annotation: the scheduler infers the layout from labels and allocatable.
    assert (labels_row.layout, labels_row.free, labels_row.gpus) == ("labels", 4, 4)
    assert [d.label for d in labels_row.domains] == ["pcie"]


def test_a_malformed_annotation_falls_back_to_labels_and_says_why() -> None:
    broken = node("h100-x", annotation='{"v": 99}', labels={C.gpu_present: "true"})
    [row] = gpu_node_rows([broken], [])
    assert row.layout == "labels"
    assert row.annotation_error is not None and "version 99" in row.annotation_error


def test_mig_devices_are_counted_per_profile() -> None:
    topology = a100_mig({0: (one_g(1, 0), three_g(2, 4)), 1: None})
    pods = [pod("slice", 0, "a100", namespace="ml")]
    pods[0]["spec"]["containers"][0]["resources"] = {
        "requests": {"nvidia.com/mig-1g.5gb": "1"},
        "limits": {"nvidia.com/mig-1g.5gb": "1"},
    }
    [row] = gpu_node_rows([node("a100", topology)], pods)
    assert row.mig_free == {"nvidia.com/mig-1g.5gb": (0, 1), "nvidia.com/mig-3g.20gb": (1, 1)}


def test_taints_that_keep_pods_off_and_the_agents_own() -> None:
    taints = [
        {"key": C.sla_taint, "value": "900", "effect": "PreferNoSchedule"},
        {"key": "team", "value": "ml", "effect": "NoSchedule"},
        {"key": "cosmetic", "effect": "PreferNoSchedule"},
    ]
    [row] = gpu_node_rows([node("h100-a", dgx_h100(), taints=taints)], [])
    assert row.taints == ("gputopo.io/sla=900:PreferNoSchedule", "team=ml:NoSchedule")


def test_table_reads_like_kubectl_get() -> None:
    nodes = [
        node("h100-a", two_domain_h100(), labels={C.gpu_model: "H100", C.gpu_health: "ok"}),
        node("h100-b", dgx_h100(), taints=[{"key": "x", "effect": "NoSchedule"}]),
    ]
    rows = gpu_node_rows(nodes, [pod("p", 4, "h100-a")])
    lines = render_table(rows).splitlines()
    header = "NAME MODEL GPUS FREE FREE PER NVLINK DOMAIN HEALTH SLA TAINTS"
    assert lines[0].split() == header.split()
    assert lines[1].split() == [
        "h100-a",
        "H100",
        "8",
        "4",
        "nvl0:0/4",
        "nvl1:4/4",
        "ok",
        "<unknown>",
        "<none>",
    ]
    assert lines[2].split()[:5] == ["h100-b", "NVIDIA", "H100", "80GB", "HBM3"]
    assert lines[2].split()[-1] == "1"
    wide = render_table(rows, wide=True).splitlines()
    assert "INTERCONNECT" in wide[0] and "x:NoSchedule" in wide[2]
    assert render_table([]).startswith("No GPU nodes found")


def test_json_and_yaml_carry_the_same_document() -> None:
    rows = gpu_node_rows([node("h100-a", two_domain_h100())], [pod("p", 2, "h100-a")])
    document = json.loads(render_document(rows, "json"))
    assert document == yaml.safe_load(render_document(rows, "yaml"))
    [entry] = document["nodes"]
    assert entry["free"] == 6
    assert entry["nvlinkDomains"][0] == {"domain": 0, "gpus": [0, 1, 2, 3], "free": [2, 3]}


def test_an_unreadable_pod_is_a_note_not_a_failure() -> None:
    bad = pod("bad", 1, "h100-a")
    bad["spec"]["containers"][0]["resources"]["requests"][GPU] = "lots"
    notes: list[str] = []
    [row] = gpu_node_rows([node("h100-a", dgx_h100())], [bad], notes=notes)
    assert row.free == 8
    assert len(notes) == 1 and "Pod ml/bad" in notes[0]


GPU = "nvidia.com/gpu"
