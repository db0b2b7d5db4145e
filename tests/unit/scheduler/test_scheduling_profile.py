"""Scheduling profiles: the shipped weights (and the deployed ConfigMap that carries them),
validation naming file and field, partial files, and decoding by gputopo.core.decode (typed
sections, bounds, unknown keys, hostile files)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.scheduling_profile import (
    MAX_PROFILE_BYTES,
    default_profile,
    load_profile,
    parse_profile,
)
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
        "DynamicResources": 2,  # kube-scheduler's applyDynamicResources
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


def test_full_profile_is_decoded_into_the_profile() -> None:
    profile = parse_profile(
        {
            "apiVersion": "gputopo.io/v1alpha1",
            "kind": "SchedulerProfile",
            "scores": {"GpuTopology": 9},
            "nodeResourcesFit": {
                "strategy": "MostAllocated",
                "resources": [{"name": "nvidia.com/gpu", "weight": 3}, {"name": "cpu"}],
            },
            "nodeResourcesBalancedAllocation": {"resources": [{"name": "memory"}]},
            "interPodAffinity": {"hardPodAffinityWeight": 0},
            "reservation": {"minGpus": 0, "ttlSeconds": 86400},
            "headroom": {"minGpus": 1024},
        },
        "p.yaml",
    )
    assert profile.weight("GpuTopology") == 9
    assert profile.weight("TaintToleration") == default_profile().weight("TaintToleration")
    assert profile.fit_strategy == "MostAllocated"
    assert profile.fit_resources == (("nvidia.com/gpu", 3), ("cpu", 1))
    assert profile.balanced_resources == (("memory", 1),)
    assert profile.hard_pod_affinity_weight == 0
    assert (profile.reservation_min_gpus, profile.reservation_ttl_s) == (0, 86400)
    assert profile.headroom_min_gpus == 1024


@pytest.mark.parametrize("document", [None, {}, {"kind": "SchedulerProfile"}])
def test_empty_profile_is_the_default(document: object) -> None:
    assert parse_profile(document, "p.yaml") == default_profile()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"scores": {"GpuTopology": True}}, "scores.GpuTopology: expected an integer, got True"),
        ({"scores": {"GpuTopology": 101}}, "scores.GpuTopology: expected an integer in 0..100"),
        ({"scores": {"Magic": 1}}, "scores.Magic: unknown field (allowed: "),
        ({"scores": [1]}, "scores: expected an object, got list"),
        ({"nodeResourcesFit": {"strategy": 1}}, "nodeResourcesFit.strategy: expected one of"),
        ({"nodeResourcesFit": {"order": 1}}, "nodeResourcesFit.order: unknown field"),
        ({"nodeResourcesFit": 5}, "nodeResourcesFit: expected an object, got int"),
        (
            {"nodeResourcesFit": {"resources": [{"weight": 2}]}},
            "nodeResourcesFit.resources[0].name: required field is missing",
        ),
        (
            {"nodeResourcesFit": {"resources": [{"name": "pods"}]}},
            "nodeResourcesFit.resources[0].name: expected a resource name, got 'pods'",
        ),
        (
            {"nodeResourcesBalancedAllocation": {"resources": [{"name": "cpu", "weight": 101}]}},
            "nodeResourcesBalancedAllocation.resources[0].weight: expected an integer in 1..100",
        ),
        (
            {"interPodAffinity": {"hardPodAffinityWeight": 2**63 - 1}},
            "interPodAffinity.hardPodAffinityWeight: expected an integer in 0..100",
        ),
        ({"reservation": {"minGpus": 1025}}, "reservation.minGpus: expected an integer in 0..1024"),
        ({"reservation": {"ttlSeconds": 1.5}}, "reservation.ttlSeconds: expected an integer"),
        ({"headroom": {"minGpus": -1}}, "headroom.minGpus: expected an integer in 0..1024"),
        (
            {"percentageOfNodesToScore": 101},
            "percentageOfNodesToScore: expected an integer in 0..100",
        ),
        (
            {"gpuPercentageOfNodesToScore": "all"},
            "gpuPercentageOfNodesToScore: expected an integer",
        ),
        ({"weights": {}}, "weights: unknown field"),
        ([1], "document: expected a mapping, got list"),
        ({"kind": "Deployment"}, "kind: expected SchedulerProfile, got 'Deployment'"),
    ],
)
def test_bad_section_names_the_file_and_field(document: object, message: str) -> None:
    with pytest.raises(SchedulerInputError) as error:
        parse_profile(document, "p.yaml")
    assert str(error.value).startswith(f"profile p.yaml: {message}")


def test_profile_file_over_the_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("#" * (MAX_PROFILE_BYTES + 1))
    with pytest.raises(SchedulerInputError, match=r"larger than 1048576 bytes"):
        load_profile(path)


def test_alias_bomb_profile_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(7):
        lines.append(f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SchedulerInputError, match=r"^profile .*once aliases are expanded"):
        load_profile(path)


_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
)
_SECTIONS = st.sampled_from(
    [
        "scores",
        "nodeResourcesFit",
        "nodeResourcesBalancedAllocation",
        "interPodAffinity",
        "reservation",
        "headroom",
        "kind",
        "apiVersion",
    ]
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        _SECTIONS,
        st.recursive(
            _LEAVES,
            lambda inner: st.one_of(
                st.lists(inner, max_size=3),
                st.dictionaries(
                    st.sampled_from(["name", "weight", "strategy", "resources", "minGpus", "x"]),
                    inner,
                    max_size=3,
                ),
            ),
            max_leaves=8,
        ),
        max_size=4,
    )
)
def test_random_profile_structure_decodes_or_is_one_input_error(document: object) -> None:
    try:
        profile = parse_profile(document, "p.yaml")
    except SchedulerInputError as error:
        assert str(error).startswith("profile p.yaml: ")
        assert "\n" not in str(error)
        return
    assert all(0 <= weight <= 100 for weight in profile.weights.values())
    assert 1 <= profile.reservation_ttl_s <= 86400


def test_node_sampling_is_kube_schedulers_adaptive_default_and_all_for_gpu_pods() -> None:
    profile = default_profile()
    assert (profile.percentage_of_nodes_to_score, profile.gpu_percentage_of_nodes_to_score) == (
        0,
        100,
    )


def test_node_sampling_percentages_are_read_from_the_profile() -> None:
    profile = parse_profile(
        {"percentageOfNodesToScore": 30, "gpuPercentageOfNodesToScore": 0}, "p.yaml"
    )
    assert (profile.percentage_of_nodes_to_score, profile.gpu_percentage_of_nodes_to_score) == (
        30,
        0,
    )
