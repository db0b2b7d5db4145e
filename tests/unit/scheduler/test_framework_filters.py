"""The framework's side of filtering: kube-scheduler's fit-error message, scheduling gates, and
what gputopo reports instead of ignoring (each filter plugin is tested in plugins/)."""

from __future__ import annotations

from gputopo.scheduler.framework import fit_error_message
from tests.unit.scheduler.sched_builders import cluster, node, pod, schedule

SLA = "gputopo.io/sla"


def _taint(key: str, value: str, effect: str = "NoSchedule") -> dict[str, str]:
    return {"key": key, "value": value, "effect": effect}


def test_brief_example_message_is_formatted_like_kube_scheduler() -> None:
    gpu_nodes = [
        node(
            f"gpu-{i}",
            allocatable={"cpu": "8", "memory": "8Gi", "pods": "110", "nvidia.com/gpu": "1"},
        )
        for i in range(4)
    ]
    sla_nodes = [node(f"sla-{i}", taints=[_taint(SLA, "900")]) for i in range(8)]
    result = schedule(pod("p", limits={"nvidia.com/gpu": "2"}), cluster(gpu_nodes + sla_nodes))
    assert result.message == (
        "0/12 nodes are available: 4 Insufficient nvidia.com/gpu, "
        "8 node(s) had untolerated taint {gputopo.io/sla: 900}."
    )


def test_fit_error_sorts_entries_as_strings() -> None:
    assert fit_error_message(16, {"x": 12, "y": 4}) == ("0/16 nodes are available: 12 x, 4 y.")
    assert fit_error_message(3, {}) == "0/3 nodes are available:"


def test_scheduling_gates_hold_the_pod() -> None:
    result = schedule(pod("p", schedulingGates=[{"name": "quota"}]), cluster([node("a")]))
    assert result.node is None
    assert result.message == "Scheduling is blocked due to non-empty scheduling gates"


def test_dra_resource_claims_are_reported_not_ignored() -> None:
    claims = [{"name": "gpu", "resourceClaimName": "gpu-claim"}]
    result = schedule(pod("p", resourceClaims=claims), cluster([node("a")]))
    assert result.node is None
    assert "resourceClaims" in result.message  # no DRA objects: said so, not guessed


def test_pvc_volumes_schedule_with_a_warning() -> None:
    volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
    result = schedule(pod("p", volumes=volumes), cluster([node("a")]))
    assert result.node == "a"
    assert len(result.warnings) == 1
    assert "VolumeBinding" in result.warnings[0]


def test_no_nodes() -> None:
    result = schedule(pod("p"), cluster([]))
    assert result.message == "no nodes available to schedule pods"
