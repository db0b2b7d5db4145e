"""The topology annotation: static facts only, compact, and parsed back by the contract."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from gputopo.agent.annotation import (
    build_topology_annotation,
    topology_annotation_value,
    topology_from_annotation,
)
from gputopo.agent.topology import EccCounts, Health, NodeTopology
from gputopo.core.contract import ContractError, parse_topology_annotation
from gputopo.core.grammar import format_cpulist, parse_cpulist
from tests.unit.agent.machines import a100_mig, degraded, dgx_h100, one_g, three_g


def test_round_trip_dgx_h100() -> None:
    topology = dgx_h100()
    parsed = parse_topology_annotation(topology_annotation_value(topology))
    assert parsed == build_topology_annotation(topology)
    assert parsed.numa_nodes[1].cpus == tuple(range(112, 224))
    assert parsed.gpus[5].numa_node == 1
    assert parsed.gpus[5].nvlink_domain == 0
    assert parsed.gpus_by_numa_node() == {0: (0, 1, 2, 3), 1: (4, 5, 6, 7)}


def test_round_trip_mig_layout() -> None:
    topology = a100_mig({0: (one_g(1, 0), three_g(2, 4)), 1: None})
    parsed = parse_topology_annotation(topology_annotation_value(topology))
    assert [gi.profile for gi in parsed.gpus[0].mig] == ["1g.5gb", "3g.20gb"]
    assert parsed.gpus[0].mig[1].placement_start == 4
    assert parsed.gpus[1].mig_enabled is False


def test_annotation_leaves_out_counters_and_degraded_health() -> None:
    healthy = topology_annotation_value(dgx_h100())
    sick = degraded(
        dgx_h100(),
        0,
        health=Health.DEGRADED,
        ecc=EccCounts(volatile_uncorrected=9),
        temperature_c=90,
    )
    assert topology_annotation_value(sick) == healthy


def test_annotation_marks_a_failed_gpu_so_the_scheduler_never_hands_it_out() -> None:
    failed = degraded(
        dgx_h100(), 2, health=Health.FAILED, ecc=EccCounts(volatile_uncorrected=9), temperature_c=90
    )
    parsed = parse_topology_annotation(topology_annotation_value(failed))
    assert [gpu.health for gpu in parsed.gpus] == [None, None, "failed"] + [None] * 5


def test_dgx_h100_annotation_is_small() -> None:
    size = len(topology_annotation_value(dgx_h100()).encode())
    assert size < 8 * 1024  # far below the 256 KiB annotation limit


def test_cpu_list_is_compact() -> None:
    assert format_cpulist((0, 1, 2, 3, 8, 10, 11)) == "0-3,8,10-11"
    assert parse_cpulist("0-3,8,10-11") == (0, 1, 2, 3, 8, 10, 11)
    assert format_cpulist(()) == ""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid JSON"),
        ("[]", "JSON object"),
        ('{"v": 99, "interconnect": "pcie"}', "version 99 is not supported"),
        ('{"v": 1, "interconnect": "pcie", "gpus": [{"index": "0"}]}', r"gpus\[0\].index"),
        ('{"v": 1, "interconnect": "pcie", "numa_nodes": [{"id": 0, "cpus": "3-1"}]}', "backwards"),
    ],
)
def test_parser_names_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ContractError, match=message):
        parse_topology_annotation(text)


def test_parser_keeps_unknown_fields_of_the_same_version() -> None:
    document = json.loads(topology_annotation_value(dgx_h100()))
    document["future_field"] = 1
    assert parse_topology_annotation(json.dumps(document)).extra == {"future_field": 1}


@pytest.mark.parametrize(
    "topology",
    [dgx_h100(), a100_mig({0: (one_g(1, 0), three_g(2, 4)), 1: None})],
    ids=["dgx-h100", "a100-mig"],
)
def test_annotation_read_back_into_the_model_gives_the_same_annotation(
    topology: NodeTopology,
) -> None:
    annotation = build_topology_annotation(topology)
    model = topology_from_annotation(annotation, "node-1")
    assert build_topology_annotation(model) == annotation
    assert model.node.hostname == "node-1"
    assert model.driver.driver_version is None  # not in the annotation: unknown, not guessed
    assert all(gpu.nvlinks == () and gpu.p2p == () for gpu in model.gpus)


def test_annotation_read_back_keeps_a_failed_gpu_failed() -> None:
    failed = degraded(dgx_h100(), 3, health=Health.FAILED)
    model = topology_from_annotation(build_topology_annotation(failed), "n")
    assert [gpu.health for gpu in model.gpus].count(Health.FAILED) == 1
    assert model.gpus[3].health is Health.FAILED and model.gpus[3].health_reasons


def test_annotation_read_back_puts_nics_on_their_numa_nodes() -> None:
    model = topology_from_annotation(build_topology_annotation(dgx_h100()), "n")
    assert model.numa_nodes[0].nics == ("mlx5_0", "mlx5_1", "mlx5_2", "mlx5_3")


def test_annotation_with_an_unknown_interconnect_is_refused() -> None:
    annotation = replace(build_topology_annotation(dgx_h100()), interconnect="infiniband")
    with pytest.raises(ValueError, match="interconnect: expected one of nvswitch"):
        topology_from_annotation(annotation, "n")
