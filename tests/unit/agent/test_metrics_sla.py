"""``gputopo_node_sla_score``: the raw SLA score of the latest discovery (alerts, dashboards)."""

from __future__ import annotations

from gputopo.agent.metrics import MetricsSnapshot
from gputopo.agent.sla import assess
from gputopo.agent.topology import Health
from tests.unit.agent.machines import cpu_only, degraded, dgx_h100
from tests.unit.agent.test_metrics import one, scrape


def test_a_healthy_dgx_scores_1000() -> None:
    assert one(scrape(MetricsSnapshot(topology=dgx_h100())), "gputopo_node_sla_score") == 1000


def test_a_failed_gpu_lowers_the_score_as_the_sla_assessment_does() -> None:
    topology = degraded(dgx_h100(), 3, health=Health.FAILED, lost=True)
    expected = assess(topology)
    assert expected is not None and expected.score < 950
    assert one(scrape(MetricsSnapshot(topology=topology)), "gputopo_node_sla_score") == (
        expected.score
    )


def test_no_series_without_gpus_or_before_the_first_discovery() -> None:
    assert "gputopo_node_sla_score" not in scrape(MetricsSnapshot(topology=cpu_only()))
    assert "gputopo_node_sla_score" not in scrape(MetricsSnapshot())
