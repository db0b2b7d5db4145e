"""Event handlers: which Node changes are worth requeueing pods for; what a status-only Pod
change keeps."""

from __future__ import annotations

from typing import Any

import pytest

from gputopo.scheduler.runtime.core_adapter import CoreFramework
from gputopo.scheduler.runtime.handlers import _node_scheduling_changed
from gputopo.scheduler.runtime.runner import RuntimeConfig, SchedulerRuntime


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


def test_status_only_update_of_a_bound_pod_keeps_one_version_and_skips_the_core(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime = SchedulerRuntime(_NoApi(), CoreFramework(), RuntimeConfig(metrics_address=None))
    runtime.handlers.on_add("Node", node({}, "2026-01-01T00:00:00Z"))
    bound = _bound_pod("Pending")
    runtime.handlers.on_add("Pod", bound)
    running = _bound_pod("Running")  # kwok/kubelet: status only

    def reparsed(*_: object) -> None:
        raise AssertionError("a status-only change must not reach the core")

    monkeypatch.setattr(runtime.framework, "upsert_pod", reparsed)
    runtime.handlers.on_update("Pod", bound, running)
    assert runtime.cache.bound_pods()[0] is running  # not the Pending version next to it


def _bound_pod(phase: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "train", "name": "llama-0", "uid": "u-1", "labels": {"a": "b"}},
        "spec": {
            "nodeName": "dgx-a",
            "containers": [{"name": "main", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
        },
        "status": {"phase": phase},
    }


class _NoApi:
    def request(self, method: str, path: str, **_: Any) -> dict[str, Any]:
        raise AssertionError(f"no API call expected: {method} {path}")
