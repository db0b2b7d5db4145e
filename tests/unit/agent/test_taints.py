"""Taint computation: the SLA taint on every GPU node, the health taint for failed GPUs."""

from __future__ import annotations

import pytest

from gputopo.agent.taints import InvalidTaintEffect, TaintOptions, compute_taints
from gputopo.agent.topology import Health
from gputopo.core.contract import Contract
from gputopo.core.validate import Taint
from tests.unit.agent.machines import cpu_only, degraded, dgx_h100


def test_healthy_gpu_node_gets_only_the_sla_taint() -> None:
    assert compute_taints(dgx_h100(), 1000) == [Taint("gputopo.io/sla", "1000", "PreferNoSchedule")]


def test_failed_gpu_adds_the_health_taint() -> None:
    topology = degraded(dgx_h100(), 1, health=Health.FAILED)
    taints = compute_taints(topology, 500)
    assert Taint("gputopo.io/gpu-health", "failed", "NoSchedule") in taints


def test_degraded_gpu_gets_no_health_taint() -> None:
    topology = degraded(dgx_h100(), 1, health=Health.DEGRADED, nvlinks_down=1)
    assert [t.key for t in compute_taints(topology, 950)] == ["gputopo.io/sla"]


def test_effects_are_configurable() -> None:
    topology = degraded(dgx_h100(), 1, lost=True)
    options = TaintOptions(sla_effect="NoSchedule", health_effect="NoExecute")
    assert compute_taints(topology, 500, options) == [
        Taint("gputopo.io/sla", "500", "NoSchedule"),
        Taint("gputopo.io/gpu-health", "failed", "NoExecute"),
    ]


def test_cpu_only_node_is_not_tainted() -> None:
    assert compute_taints(cpu_only(), None) == []


def test_prefix_moves_taint_keys() -> None:
    taints = compute_taints(dgx_h100(), 990, TaintOptions(contract=Contract("x.example")))
    assert taints == [Taint("x.example/sla", "990", "PreferNoSchedule")]


def test_bad_effect_names_the_flag() -> None:
    with pytest.raises(InvalidTaintEffect, match="--health-taint-effect 'Evict'"):
        TaintOptions(health_effect="Evict")
