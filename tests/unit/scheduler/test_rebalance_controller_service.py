"""The deployable around the controller: rounds only while leading, /metrics and /healthz."""

from __future__ import annotations

import time
import urllib.request
from typing import cast

from gputopo.scheduler.rebalance_controller import (
    RebalanceController,
    RebalanceMetrics,
    RebalanceRunner,
    RebalanceService,
    RebalanceSettings,
)
from gputopo.scheduler.runtime.kube import KubeApi
from tests.polling import eventually
from tests.unit.scheduler.test_rebalance_controller import (
    NOW,
    Events,
    FakeKube,
    _fragmented,
    _waiting,
)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return str(answer.read().decode())


def test_a_standby_runs_no_round() -> None:
    kube = FakeKube(_fragmented(_waiting("trainer", 8)))
    metrics = RebalanceMetrics()
    controller = RebalanceController(
        cast(KubeApi, kube), RebalanceSettings(interval_s=0.01), Events(), metrics
    )
    asked: list[bool] = []

    def not_leading() -> bool:
        asked.append(False)
        return False

    runner = RebalanceRunner(controller, not_leading)
    runner.start()
    try:
        eventually(lambda: len(asked) >= 3, 10, "the runner asking for the lead")
    finally:
        runner.stop()
    assert metrics.registry.get_sample_value("gputopo_rebalance_rounds_total") == 0
    assert kube.writes == [] and kube.events == []


def test_the_service_plans_and_serves_its_metrics_and_health() -> None:
    # Unschedulable for ten minutes by the real clock, which the service reads.
    kube = FakeKube(_fragmented(_waiting("trainer", 8, waited_s=NOW - time.time() + 600)))
    settings = RebalanceSettings(wait_s=0, interval_s=0.05)
    service = RebalanceService(
        cast(KubeApi, kube), settings, metrics_address="127.0.0.1:0", identity="unit"
    )
    service.start()
    try:
        assert service.server is not None
        base = service.server.url
        eventually(lambda: kube.events, 10, "the RebalancePlanned event written")
        metrics = _get(f"{base}/metrics")
        assert "gputopo_rebalance_leader 1.0" in metrics
        assert 'gputopo_rebalance_moves_total{mode="dry-run"} 1.0' in metrics
        assert "gputopo_rebalance_waiting_pods 1.0" in metrics
        assert _get(f"{base}/healthz").startswith("ok")
    finally:
        service.stop()
    (event,) = kube.events
    assert event["reason"] == "RebalancePlanned"
    assert event["reportingController"] == "gputopo.io/rebalance"
    assert event["reportingInstance"] == "unit"
    assert kube.writes == []  # dry run: no eviction, no nomination
