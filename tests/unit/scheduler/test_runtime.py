"""Small pure parts of the runtime: priorities, node-change relevance, metrics, logs, config."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from gputopo.core.logs import JsonFormatter
from gputopo.scheduler.runtime.core_adapter import CoreFramework
from gputopo.scheduler.runtime.handlers import NRT_KIND, _node_scheduling_changed
from gputopo.scheduler.runtime.kube import KubeApiError
from gputopo.scheduler.runtime.leader import LeaseConfig, micro_time
from gputopo.scheduler.runtime.metrics import RuntimeState, SchedulerMetrics
from gputopo.scheduler.runtime.priorities import PriorityClasses
from gputopo.scheduler.runtime.queue import QueueDepth
from gputopo.scheduler.runtime.runner import NRT_API, RuntimeConfig, SchedulerRuntime
from gputopo.scheduler.scheduling_profile import default_profile, parse_profile

REPO = Path(__file__).resolve().parents[3]


def priority_class(name: str, value: int, global_default: bool = False) -> dict[str, Any]:
    return {"metadata": {"name": name}, "value": value, "globalDefault": global_default}


def test_spec_priority_wins_over_priority_class_name() -> None:
    classes = PriorityClasses()
    classes.upsert(priority_class("training-high", 1000))
    pod = {"spec": {"priority": 5, "priorityClassName": "training-high"}}
    assert classes.priority_of(pod) == 5


def test_priority_class_value_when_admission_did_not_fill_spec_priority() -> None:
    classes = PriorityClasses()
    classes.upsert(priority_class("training-high", 1000))
    assert classes.priority_of({"spec": {"priorityClassName": "training-high"}}) == 1000


def test_global_default_priority_class_applies_to_pods_without_one() -> None:
    classes = PriorityClasses()
    classes.upsert(priority_class("batch-default", 100, global_default=True))
    assert classes.priority_of({"spec": {}}) == 100
    classes.delete(priority_class("batch-default", 100))
    assert classes.priority_of({"spec": {}}) == 0


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


def test_metrics_render_work_counters_and_scrape_time_state() -> None:
    state = RuntimeState(QueueDepth(3, 1, 2, 0), leader=True, assumed_pods=4, nodes=12)
    metrics = SchedulerMetrics(lambda: state)
    metrics.attempts.labels("scheduled").inc()
    metrics.bind_errors.labels("conflict").inc()
    metrics.scheduling_duration.observe(0.002)
    text = metrics.render().decode()
    assert 'gputopo_scheduler_attempts_total{result="scheduled"} 1.0' in text
    assert 'gputopo_scheduler_attempts_total{result="unschedulable"} 0.0' in text
    assert 'gputopo_scheduler_bind_errors_total{reason="conflict"} 1.0' in text
    assert "gputopo_scheduler_scheduling_duration_seconds_count 1.0" in text
    assert 'gputopo_scheduler_queue_depth{queue="active"} 3.0' in text
    assert "gputopo_scheduler_leader 1.0" in text
    assert "gputopo_scheduler_assumed_pods 4.0" in text


def test_json_log_line_carries_the_extras() -> None:
    record = logging.LogRecord(
        "gputopo.scheduler", logging.INFO, __file__, 1, "pod bound", (), None
    )
    record.pod = "train/llama-0"
    record.node = "dgx-a"
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "pod bound"
    assert line["level"] == "info"
    assert (line["pod"], line["node"]) == ("train/llama-0", "dgx-a")


def test_micro_time_always_has_six_fractional_digits() -> None:
    from datetime import UTC, datetime

    assert micro_time(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05.000000Z"


def test_lease_timings_must_nest() -> None:
    with pytest.raises(ValueError, match="retry period < renew deadline < lease duration"):
        LeaseConfig("gputopo-system", "gputopo-scheduler", "a", 10.0, 15.0, 2.0)


def test_deployed_profile_configmap_is_the_default_profile() -> None:
    configmap = yaml.safe_load((REPO / "daemonset/scheduler/configmap.yaml").read_text())
    document = yaml.safe_load(configmap["data"]["profile.yaml"])
    assert parse_profile(document, "configmap.yaml") == default_profile()


class _DiscoveryApi:
    """Answers only the group/version discovery GETs the runtime makes before watching CRDs."""

    def __init__(self, missing: set[str], unreachable: bool = False) -> None:
        self.missing = missing
        self.unreachable = unreachable

    def request(self, method: str, path: str, **_: Any) -> dict[str, Any]:
        if self.unreachable:
            raise OSError("connection refused")
        if path in self.missing:
            raise KubeApiError(method, path, 404, "NotFound", "the server could not find it")
        return {"kind": "APIResourceList", "groupVersion": path.removeprefix("/apis/")}


def _runtime(api: Any) -> SchedulerRuntime:
    return SchedulerRuntime(api, CoreFramework(), RuntimeConfig(metrics_address=None))


def test_nrt_watch_is_skipped_only_when_the_api_server_denies_the_crd() -> None:
    assert _runtime(_DiscoveryApi({NRT_API}))._api_served(NRT_API) is False
    assert _runtime(_DiscoveryApi(set()))._api_served(NRT_API) is True
    # Unreachable is not "not installed": the watch starts and retries with backoff.
    assert _runtime(_DiscoveryApi(set(), unreachable=True))._api_served(NRT_API) is True


def test_nrt_events_reach_the_allocator_and_a_delete_forgets() -> None:
    runtime = _runtime(_DiscoveryApi(set()))
    framework = runtime.framework
    assert isinstance(framework, CoreFramework)
    nrt = {
        "metadata": {"name": "dgx-a", "resourceVersion": "7"},
        "zones": [{"name": "node-1", "resources": [{"name": "nvidia.com/gpu", "available": 3}]}],
    }
    runtime.handlers.on_add(NRT_KIND, nrt)
    assert dict(framework.gpus.nrt["dgx-a"].available) == {1: 3}
    newer = {
        **nrt,
        "zones": [{"name": "node-1", "resources": [{"name": "nvidia.com/gpu", "available": 1}]}],
    }
    runtime.handlers.on_update(NRT_KIND, nrt, newer)
    assert dict(framework.gpus.nrt["dgx-a"].available) == {1: 1}
    runtime.handlers.on_delete(NRT_KIND, newer)
    assert "dgx-a" not in framework.gpus.nrt


def test_gc_tuning_raises_thresholds_and_freezes_the_startup_heap() -> None:
    import gc

    from gputopo.scheduler.runtime import gctune

    before = gc.get_threshold()
    try:
        gctune.tune()
        assert gc.get_threshold() == gctune.THRESHOLDS
        gctune.freeze_startup_heap()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
