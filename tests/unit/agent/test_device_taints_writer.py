"""DeviceTaintPublisher against an in-memory API: zero writes when nothing changed, the
hysteresis count kept on the rule, conflicts re-planned, no DRA API means no rule, prune."""

from __future__ import annotations

from typing import Any

from gputopo.agent.device_taints import DeviceTaintOptions, DeviceTaintPublisher
from gputopo.agent.publish.cycle import run_cycle
from gputopo.agent.publish.writer import Publisher
from gputopo.agent.topology import Health
from gputopo.core.retry import Backoff
from tests.unit.agent.fake_resource_api import FakeNodeApi, FakeResourceApi
from tests.unit.agent.machines import degraded, dgx_h100, nvml_down_with_gpus
from tests.unit.agent.test_device_taints import h100_slice

NODE = "dgx-1"


def publisher(api: FakeResourceApi, **options: Any) -> DeviceTaintPublisher:
    return DeviceTaintPublisher(
        api,
        NODE,
        DeviceTaintOptions(**options),
        backoff=Backoff(max_attempts=2, sleep=lambda _: None),
    )


def lost(index: int) -> Any:
    return degraded(dgx_h100(), index, health=Health.FAILED, lost=True)


def taint_of(api: FakeResourceApi, name: str) -> str:
    taint = api.rules[name]["spec"]["taint"]
    return f"{taint['key']}={taint['value']}:{taint['effect']}"


def test_a_lost_gpu_gets_its_rule_and_a_second_publish_writes_nothing() -> None:
    api = FakeResourceApi([h100_slice()])
    writer = publisher(api)

    first = writer.publish(lost(5))
    second = writer.publish(lost(5))

    assert first.status == "written"
    assert list(api.rules) == ["gputopo.dgx-1.gpu-5"]
    assert taint_of(api, "gputopo.dgx-1.gpu-5") == "gputopo.io/gpu-health=failed:NoSchedule"
    assert second.status == "unchanged"
    assert api.writes == [("POST", "gputopo.dgx-1.gpu-5")]


def test_recovery_deletes_the_rule_after_three_healthy_discoveries() -> None:
    api = FakeResourceApi([h100_slice()])
    writer = publisher(api)
    writer.publish(lost(5))

    results = [writer.publish(dgx_h100()).status for _ in range(3)]

    assert results == ["written", "written", "written"]
    assert api.rules == {}
    counts = [verb for verb, _ in api.writes[1:]]
    assert counts == ["PATCH", "PATCH", "DELETE"]


def test_a_failed_discovery_touches_no_rule() -> None:
    api = FakeResourceApi([h100_slice()])
    writer = publisher(api)
    writer.publish(lost(5))

    for _ in range(5):
        assert writer.publish(nvml_down_with_gpus()).status == "skipped"

    assert list(api.rules) == ["gputopo.dgx-1.gpu-5"]
    assert len(api.writes) == 1


def test_a_conflict_is_re_read_and_re_planned() -> None:
    api = FakeResourceApi([h100_slice()])
    writer = publisher(api)
    writer.publish(degraded(dgx_h100(), 5, health=Health.DEGRADED, nvlinks_down=1))
    api.conflict_next_patch = True

    result = writer.publish(lost(5))

    assert result.status == "written", result.message
    assert taint_of(api, "gputopo.dgx-1.gpu-5") == "gputopo.io/gpu-health=failed:NoSchedule"
    assert writer.counters.conflicts == 1


def test_without_the_resource_api_nothing_is_written_and_nothing_fails() -> None:
    api = FakeResourceApi([], served=False)

    result = publisher(api).publish(lost(5))

    assert (result.status, result.message) == ("unchanged", "resource.k8s.io/v1 not served")
    assert api.writes == []


def test_other_nodes_rules_are_never_read_as_ours() -> None:
    api = FakeResourceApi([h100_slice(), h100_slice(node="dgx-2", pool="dgx-2")])
    other = DeviceTaintPublisher(api, "dgx-2", DeviceTaintOptions())
    other.publish(lost(1))

    for _ in range(4):
        publisher(api).publish(dgx_h100())

    assert list(api.rules) == ["gputopo.dgx-2.gpu-1"]


def test_prune_deletes_every_own_rule_at_once_and_dry_run_writes_nothing() -> None:
    api = FakeResourceApi([h100_slice()])
    writer = publisher(api)
    writer.publish(degraded(lost(2), 6, lost=True))

    dry = writer.prune(dry_run=True)
    assert dry.status == "dry-run" and len(dry.changes) == 2
    assert len(api.rules) == 2

    assert writer.prune().status == "written"
    assert api.rules == {}


def test_on_a_dra_node_the_device_taint_replaces_the_node_health_taint() -> None:
    resources = FakeResourceApi([h100_slice()])
    nodes = FakeNodeApi(NODE)
    node_publisher = Publisher(nodes, NODE, backoff=Backoff(max_attempts=1))

    result = run_cycle(lambda: lost(5), node_publisher, device_taints=publisher(resources))

    assert result.ok
    assert list(resources.rules) == ["gputopo.dgx-1.gpu-5"]
    assert "gputopo.io/gpu-health" not in nodes.taint_keys()
    assert "gputopo.io/sla" in nodes.taint_keys()


def test_without_slices_of_its_own_the_node_keeps_its_health_taint_and_gets_no_rule() -> None:
    resources = FakeResourceApi([h100_slice(node="dgx-2", pool="dgx-2")])
    nodes = FakeNodeApi(NODE)
    node_publisher = Publisher(nodes, NODE, backoff=Backoff(max_attempts=1))

    result = run_cycle(lambda: lost(5), node_publisher, device_taints=publisher(resources))

    assert result.ok
    assert resources.rules == {}
    assert "gputopo.io/gpu-health" in nodes.taint_keys()
