"""The scheduler's metrics: work counters, and state read at scrape time."""

from __future__ import annotations

from gputopo.scheduler.runtime.metrics import RuntimeState, SchedulerMetrics
from gputopo.scheduler.runtime.queue import QueueDepth


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
