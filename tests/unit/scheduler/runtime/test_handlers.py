"""Event handlers: which Node changes are worth requeueing pods for."""

from __future__ import annotations

from typing import Any

from gputopo.scheduler.runtime.handlers import _node_scheduling_changed


def node(labels: dict[str, str], conditions_time: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "dgx-a", "labels": labels},
        "spec": {},
        "status": {
            "allocatable": {"nvidia.com/gpu": "8"},
            "conditions": [{"type": "Ready", "lastHeartbeatTime": conditions_time}],
        },
    }


def test_node_heartbeat_alone_does_not_requeue_pods() -> None:
    old = node({"gputopo.io/health": "ok"}, "2026-01-01T00:00:00Z")
    new = node({"gputopo.io/health": "ok"}, "2026-01-01T00:00:10Z")
    assert not _node_scheduling_changed(old, new)


def test_node_label_change_requeues_pods() -> None:
    old = node({"gputopo.io/health": "degraded"}, "2026-01-01T00:00:00Z")
    new = node({"gputopo.io/health": "ok"}, "2026-01-01T00:00:00Z")
    assert _node_scheduling_changed(old, new)
