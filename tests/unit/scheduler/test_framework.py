"""The plugin interface: the framework runs whatever the plugin tuple holds, in its order, and
reads preemption's answer from the verdicts' status codes."""

from __future__ import annotations

import ast
import inspect
from typing import Any, Final

import numpy as np
import pytest

from gputopo.scheduler import framework
from gputopo.scheduler.framework import schedule_one
from gputopo.scheduler.model import parse_pod
from gputopo.scheduler.plugins import PLUGINS
from gputopo.scheduler.plugins.context import (
    CycleContext,
    FilterPlugin,
    Plugin,
    PreFilterPlugin,
    ScorePlugin,
)
from gputopo.scheduler.plugins.verdict import Code, CodedVerdict, Reason
from gputopo.scheduler.preemption import NOT_HELPFUL_REASON, Preemption
from gputopo.scheduler.scheduling_profile import default_profile
from tests.unit.scheduler.sched_builders import cluster, node, pod

GPU: Final = "nvidia.com/gpu"


class RackFilter:
    """A plugin a reader could add: nodes of one rack are closed, with a fixed reason."""

    name = "RackClosed"

    def __init__(self, rack: str, code: Code = Code.UNSCHEDULABLE) -> None:
        self.rack = rack
        self.reason = Reason(f"node(s) were in closed rack {rack}", code)

    def filter(self, ctx: CycleContext) -> CodedVerdict:
        codes = np.zeros(ctx.snapshot.capacity, dtype=np.int8)
        for slot, item in ctx.snapshot.iter_nodes():
            if item.labels.get("rack") == self.rack:
                codes[slot] = 1
        return CodedVerdict(codes, {1: self.reason})


def _racks() -> list[dict[str, Any]]:
    return [
        node("a1", labels={"rack": "a"}),
        node("a2", labels={"rack": "a"}),
        node("b1", labels={"rack": "b"}),
    ]


def test_an_added_filter_plugin_is_one_line_and_its_reason_is_counted() -> None:
    snapshot = cluster(_racks())
    plugins = (*PLUGINS, RackFilter("b"))

    result = schedule_one(parse_pod(pod("p")), snapshot, plugins=plugins)
    assert result.node in ("a1", "a2")
    verdict = result.diagnosis()["b1"]
    assert verdict.reasons == ("node(s) were in closed rack b",)
    assert verdict.failed_plugin == "RackClosed"

    everything_closed = (*plugins, RackFilter("a"))
    result = schedule_one(parse_pod(pod("p")), snapshot, plugins=everything_closed)
    assert result.message == (
        "0/3 nodes are available: 1 node(s) were in closed rack b, 2 node(s) were in closed rack a."
    )


def test_the_last_of_many_filters_is_still_reported_and_too_many_are_refused() -> None:
    snapshot = cluster(_racks())
    filters = sum(isinstance(plugin, FilterPlugin) for plugin in PLUGINS)
    many = tuple(RackFilter(f"x{i}") for i in range(125 - filters - 1))
    plugins = (*PLUGINS, *many, RackFilter("b"))  # the 125th filter, the most an int8 stage holds
    verdict = schedule_one(parse_pod(pod("p")), snapshot, plugins=plugins).diagnosis()["b1"]
    assert verdict.reasons == ("node(s) were in closed rack b",)
    with pytest.raises(ValueError, match="126 filter plugins; at most 125"):
        schedule_one(parse_pod(pod("p")), snapshot, plugins=(*plugins, RackFilter("c")))


def test_a_node_reports_only_the_first_filter_it_fails_in_tuple_order() -> None:
    snapshot = cluster([*_racks(), node("c1", labels={"rack": "c"}, unschedulable=True)])
    plugins = (RackFilter("c"), *PLUGINS)  # placed first: it wins over NodeUnschedulable

    result = schedule_one(parse_pod(pod("p")), snapshot, plugins=plugins)
    assert result.diagnosis()["c1"].reasons == ("node(s) were in closed rack c",)
    default = schedule_one(parse_pod(pod("p")), snapshot)
    assert default.diagnosis()["c1"].reasons == ("node(s) were unschedulable",)


def test_the_registry_is_kube_schedulers_default_filter_order() -> None:
    filters = [plugin.name for plugin in PLUGINS if isinstance(plugin, FilterPlugin)]
    assert filters == [
        "NodeUnschedulable",
        "NodeName",
        "TaintToleration",
        "NodeAffinity",
        "NodePorts",
        "NodeResourcesFit",
        "PodTopologySpread",
        "InterPodAffinity",
        "DynamicResources",
        "GpuTopology",
        "LoadAware",
        "Headroom",
    ]
    assert [p.name for p in PLUGINS if isinstance(p, PreFilterPlugin)] == [
        "NodeAffinity",
        "DynamicResources",
    ]


def test_every_score_plugin_has_a_weight_in_the_default_profile_by_its_name() -> None:
    scores = [plugin.name for plugin in PLUGINS if isinstance(plugin, ScorePlugin)]
    assert sorted(scores) == sorted(default_profile().weights)
    assert all(isinstance(plugin, Plugin) for plugin in PLUGINS)


def test_the_framework_never_names_a_plugin() -> None:
    source = inspect.getsource(framework)
    for plugin in PLUGINS:
        assert f'"{plugin.name}"' not in source, plugin.name
    imported: set[str] = set()
    for statement in ast.walk(ast.parse(source)):
        if isinstance(statement, ast.ImportFrom) and statement.module:
            imported.add(statement.module)
            imported.update(f"{statement.module}.{alias.name}" for alias in statement.names)
        elif isinstance(statement, ast.Import):
            imported.update(alias.name for alias in statement.names)
    plugin_modules = {type(plugin).__module__ for plugin in PLUGINS}
    assert plugin_modules, "the registry holds plugins"
    assert not plugin_modules & imported


def _full_node_cluster() -> tuple[Any, list[dict[str, Any]]]:
    gpu_nodes = [
        node(
            name,
            labels={"rack": rack},
            allocatable={"cpu": "8", "memory": "32Gi", "pods": "110", GPU: "4"},
        )
        for name, rack in (("a1", "a"), ("b1", "b"))
    ]
    bound = [
        pod(f"low-{name}", requests={GPU: "4"}, limits={GPU: "4"}, node_name=name, priority=1)
        for name in ("a1", "b1")
    ]
    return cluster(gpu_nodes, bound), bound


def _plan_nodes(plugins: tuple[Plugin, ...]) -> tuple[str | None, str]:
    snapshot, bound = _full_node_cluster()
    preemptor = pod("high", requests={GPU: "4"}, limits={GPU: "4"}, priority=100)
    outcome = Preemption(snapshot, default_profile(), plugins).evaluate(
        preemptor, bound, lambda item: int(item["spec"].get("priority") or 0)
    )
    return (outcome.plan.node if outcome.plan else None), outcome.message


def test_unresolvable_verdict_keeps_preemption_off_the_node() -> None:
    assert _plan_nodes(PLUGINS)[0] == "a1"  # both would do; the name decides

    node_name, _ = _plan_nodes((RackFilter("a", Code.UNSCHEDULABLE_AND_UNRESOLVABLE), *PLUGINS))
    assert node_name == "b1"

    both = (
        RackFilter("a", Code.UNSCHEDULABLE_AND_UNRESOLVABLE),
        RackFilter("b", Code.UNSCHEDULABLE_AND_UNRESOLVABLE),
        *PLUGINS,
    )
    node_name, message = _plan_nodes(both)
    assert node_name is None
    assert message == f"0/2 nodes are available: 2 {NOT_HELPFUL_REASON}."


def test_an_unschedulable_verdict_leaves_preemption_to_try() -> None:
    node_name, message = _plan_nodes((RackFilter("a"), RackFilter("b"), *PLUGINS))
    assert node_name is None  # evicting the GPU pods does not open the rack
    assert message == "0/2 nodes are available: 2 No preemption victims found for incoming pod."


def test_diagnosis_says_which_failures_preemption_cannot_cure() -> None:
    snapshot = cluster(
        [
            node("cordoned", unschedulable=True),
            node("small", allocatable={"cpu": "1", "memory": "1Gi", "pods": "110"}),
        ]
    )
    diagnosis = schedule_one(parse_pod(pod("p", requests={"cpu": "2"})), snapshot).diagnosis()
    assert diagnosis["cordoned"].unresolvable
    assert not diagnosis["small"].unresolvable
    assert diagnosis["small"].reasons == ("Insufficient cpu",)


class NodeOnlyRack(RackFilter):
    """RackFilter declaring its verdict node-only (the framework may combine it per shape)."""

    node_only = True


class PassingRecorder:
    """A filter that records which nodes passed the filters before it."""

    name = "PassingRecorder"

    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    def filter(self, ctx: CycleContext) -> None:
        self.seen.append(sorted(ctx.snapshot.node_names[slot] for slot in ctx.passing()))


def test_only_leading_node_only_filters_are_combined_per_shape() -> None:
    default = framework._extensions(PLUGINS)
    assert [f.name for f in default.filters[: default.node_only]] == [
        "NodeUnschedulable",
        "NodeName",
        "TaintToleration",
        "NodeAffinity",
    ]
    # One that comes after a filter that is not node-only is run in its turn, every cycle.
    late = framework._extensions((*PLUGINS[:6], NodeOnlyRack("a")))
    assert late.node_only == 4
    early = framework._extensions((NodeOnlyRack("a"), *PLUGINS))
    assert early.node_only == 5


def test_combined_node_only_verdicts_follow_node_changes() -> None:
    recorder = PassingRecorder()
    plugins = (NodeOnlyRack("b"), *PLUGINS[:5], recorder, *PLUGINS[5:])
    snapshot = cluster(_racks())

    first = schedule_one(parse_pod(pod("p")), snapshot, plugins=plugins)
    assert recorder.seen[-1] == ["a1", "a2"]
    assert first.diagnosis()["b1"].failed_plugin == "RackClosed"

    snapshot.add_node(node("a2", labels={"rack": "a"}, unschedulable=True))  # cordoned
    second = schedule_one(parse_pod(pod("q")), snapshot, plugins=plugins)  # the same shape
    assert recorder.seen[-1] == ["a1"]
    assert second.node == "a1"
    assert second.diagnosis()["a2"].reasons == ("node(s) were unschedulable",)
    assert second.diagnosis()["b1"].reasons == ("node(s) were in closed rack b",)
