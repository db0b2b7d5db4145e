"""Scheduling profiles: the shipped weights (and the deployed ConfigMap that carries them),
validation naming file and field, partial files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.scheduling_profile import default_profile, load_profile, parse_profile
from tests.unit.scheduler.sched_builders import cluster, node, pod, schedule

REPO = Path(__file__).resolve().parents[3]


def test_shipped_profile_has_kube_scheduler_default_weights() -> None:
    profile = default_profile()
    kube_plugins = {
        k: v for k, v in profile.weights.items() if k not in ("GpuTopology", "LoadAware")
    }
    assert kube_plugins == {
        "TaintToleration": 3,
        "NodeAffinity": 2,
        "PodTopologySpread": 2,
        "InterPodAffinity": 2,
        "NodeResourcesFit": 1,
        "NodeResourcesBalancedAllocation": 1,
    }
    assert profile.fit_strategy == "LeastAllocated"
    assert profile.fit_resources == (("cpu", 1), ("memory", 1))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("scores: {Magic: 1}\n", "scores.Magic: unknown field"),
        ("scores: {NodeAffinity: 101}\n", "scores.NodeAffinity: expected an integer in 0..100"),
        ("scores: {NodeAffinity: one}\n", "scores.NodeAffinity: expected an integer"),
        ("nodeResourcesFit: {strategy: Random}\n", "nodeResourcesFit.strategy: expected one of"),
        ("nodeResourcesFit: {resources: []}\n", "nodeResourcesFit.resources: expected a non-empty"),
        (
            "nodeResourcesFit: {resources: [{name: gpu, weight: 0}]}\n",
            "nodeResourcesFit.resources[0].weight",
        ),
        ("interPodAffinity: {hardPodAffinityWeight: -1}\n", "hardPodAffinityWeight"),
        ("kind: Deployment\n", "kind: expected SchedulerProfile"),
        ("weights: {}\n", "weights: unknown field"),
        ("- a\n", "expected a mapping"),
        ("scores: [\n", "not valid YAML"),
    ],
)
def test_profile_validation_names_file_and_field(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "profile.yaml"
    path.write_text(text)
    with pytest.raises(SchedulerInputError) as error:
        load_profile(path)
    message = str(error.value)
    assert message.startswith(f"profile {path}: ")
    assert problem in message
    assert "\n" not in message


def test_partial_profile_keeps_other_defaults(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("scores: {NodeAffinity: 5}\n")
    profile = load_profile(path)
    assert profile.weight("NodeAffinity") == 5
    assert profile.weight("TaintToleration") == 3


def test_zero_weight_switches_a_score_off(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("scores: {TaintToleration: 0}\n")
    result = schedule(pod("p"), cluster([node("a")]), load_profile(path))
    assert "TaintToleration" not in result.diagnosis()["a"].plugin_scores


def test_deployed_profile_configmap_is_the_default_profile() -> None:
    configmap = yaml.safe_load((REPO / "daemonset/scheduler/configmap.yaml").read_text())
    document = yaml.safe_load(configmap["data"]["profile.yaml"])
    assert parse_profile(document, "configmap.yaml") == default_profile()
