"""NFD's topology-updater and the agent never both write one NodeResourceTopology (issue 19):
the agent steps back from an NRT it does not manage — no write, one log line, a metric — and
writes again once that NRT is gone."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gputopo.agent.metrics import AgentStats, MetricsCollector, MetricsSnapshot, build_registry
from gputopo.agent.publish.nrt import FIELD_MANAGER, MANAGED_BY, NrtPublisher, foreign_writer
from tests.unit.agent.machines import dgx_h100

NODE = "dgx-1"


def nfd_nrt() -> dict[str, Any]:
    """An NRT as NFD's topology-updater leaves it: no managed-by label, its own field manager."""
    return {
        "apiVersion": "topology.node.k8s.io/v1alpha2",
        "kind": "NodeResourceTopology",
        "metadata": {
            "name": NODE,
            "managedFields": [
                {
                    "manager": "nfd-topology-updater",
                    "operation": "Update",
                    "fieldsV1": {"f:zones": {}},
                }
            ],
        },
        "zones": [{"name": "node-0", "type": "Node", "resources": []}],
    }


class FakeCustomObjects:
    """Stores one NRT; records every write the publisher attempts."""

    def __init__(self, stored: dict[str, Any] | None) -> None:
        self.stored = stored
        self.writes: list[str] = []

    def get_cluster_custom_object(self, group: str, version: str, plural: str, name: str) -> Any:
        if self.stored is None:
            raise _NotFound()
        return self.stored

    def patch_cluster_custom_object(
        self, group: str, version: str, plural: str, name: str, body: Any, **_: Any
    ) -> Any:
        self.writes.append("apply")
        self.stored = dict(body)
        return self.stored

    def delete_cluster_custom_object(self, group: str, version: str, plural: str, name: str) -> Any:
        self.writes.append("delete")
        self.stored = None
        return {}


class _NotFound(Exception):
    status = 404


def test_an_nrt_without_our_label_is_another_writers() -> None:
    assert foreign_writer(None) is None
    assert foreign_writer(nfd_nrt()) == "nfd-topology-updater"
    unlabelled = {"metadata": {"name": NODE}, "zones": []}
    assert foreign_writer(unlabelled) == "another writer"
    labelled = {"metadata": {"labels": {MANAGED_BY: "helm"}}}
    assert foreign_writer(labelled) == "helm"


def test_our_nrt_is_ours_unless_another_manager_wrote_its_zones() -> None:
    ours: dict[str, Any] = {
        "metadata": {
            "labels": {MANAGED_BY: FIELD_MANAGER},
            "managedFields": [
                {"manager": FIELD_MANAGER, "operation": "Apply", "fieldsV1": {"f:zones": {}}},
                {"manager": "kubectl-label", "operation": "Update", "fieldsV1": {"f:metadata": {}}},
            ],
        }
    }
    assert foreign_writer(ours) is None
    ours["metadata"]["managedFields"].append(
        {"manager": "nfd-topology-updater", "operation": "Update", "fieldsV1": {"f:zones": {}}}
    )
    assert foreign_writer(ours) == "nfd-topology-updater"


def test_the_agent_steps_back_logs_once_and_writes_again_when_it_is_gone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = FakeCustomObjects(nfd_nrt())
    publisher = NrtPublisher(api, NODE)
    with caplog.at_level(logging.INFO, logger="gputopo.agent.publish.nrt"):
        for _ in range(3):
            result = publisher.publish(dgx_h100())
            assert result.ok and result.status == "unchanged"
            assert "nfd-topology-updater" in result.message
        assert publisher.publish(dgx_h100(), dry_run=True).status == "unchanged"
    assert api.writes == []
    assert publisher.counters.foreign_nrt == 1 and publisher.counters.writes == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "nfd-topology-updater" in warnings[0].getMessage()

    api.stored = None  # NFD's topology-updater uninstalled, its NRT deleted
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="gputopo.agent.publish.nrt"):
        assert publisher.publish(dgx_h100()).status == "written"
    assert api.writes == ["apply"] and publisher.counters.foreign_nrt == 0
    assert any("no longer written by" in r.getMessage() for r in caplog.records)
    assert publisher.publish(dgx_h100()).status == "unchanged"
    assert api.writes == ["apply"]


def test_prune_leaves_another_writers_nrt_alone() -> None:
    api = FakeCustomObjects(nfd_nrt())
    assert NrtPublisher(api, NODE).prune().status == "unchanged"
    assert api.writes == []
    co_written = nfd_nrt()
    co_written["metadata"]["labels"] = {MANAGED_BY: FIELD_MANAGER}  # ours, zones NFD's
    api = FakeCustomObjects(co_written)
    assert NrtPublisher(api, NODE).prune().status == "unchanged"
    assert api.writes == []


def test_the_metric_says_the_agent_stepped_back() -> None:
    stats = AgentStats()
    stats.record_publish_checks(partial_discoveries=0, foreign_owned_keys=0, foreign_nrt=1)
    registry = build_registry(MetricsCollector(lambda: MetricsSnapshot(), stats, version="0"))
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }
    assert values["gputopo_agent_nrt_foreign_writer"] == 1
