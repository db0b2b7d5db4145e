"""Parsing Kubernetes dicts: requests arithmetic, defaulting, one-line errors naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.model import parse_namespace, parse_node, parse_pod
from tests.unit.scheduler.sched_builders import pod


def _containers(*resources: dict[str, Any], sidecar: bool = False) -> list[dict[str, Any]]:
    out = []
    for i, requests in enumerate(resources):
        container: dict[str, Any] = {"name": f"c{i}", "resources": {"requests": requests}}
        if sidecar:
            container["restartPolicy"] = "Always"
        out.append(container)
    return out


def _requests(spec: dict[str, Any]) -> dict[str, int]:
    return parse_pod({"metadata": {"name": "p"}, "spec": spec}).requests


def test_app_containers_are_summed() -> None:
    assert _requests({"containers": _containers({"cpu": "1"}, {"cpu": "500m"})}) == {"cpu": 1500}


def test_init_containers_count_as_max_of_init_and_sum_of_app() -> None:
    spec = {
        "initContainers": _containers({"cpu": "3"}, {"cpu": "1", "memory": "4Gi"}),
        "containers": _containers({"cpu": "1", "memory": "1Gi"}, {"cpu": "1", "memory": "1Gi"}),
    }
    assert _requests(spec) == {"cpu": 3000, "memory": 4 * 2**30}


def test_sidecar_init_containers_add_to_later_init_and_app_containers() -> None:
    # KEP-753: sidecar (1 cpu) runs alongside the later init container (2 cpu) and the app (1 cpu)
    spec = {
        "initContainers": _containers({"cpu": "1"}, sidecar=True) + _containers({"cpu": "2"}),
        "containers": _containers({"cpu": "1"}),
    }
    assert _requests(spec) == {"cpu": 3000}  # max(app 1 + sidecar 1, init 2 + sidecar 1)
    # an init container before the sidecar does not run alongside it
    spec = {
        "initContainers": _containers({"cpu": "5"}) + _containers({"cpu": "1"}, sidecar=True),
        "containers": _containers({"cpu": "1"}),
    }
    assert _requests(spec) == {"cpu": 5000}


def test_overhead_is_added_and_limits_default_requests() -> None:
    spec = {
        "containers": [
            {
                "name": "c",
                "resources": {
                    "limits": {"nvidia.com/gpu": 2, "cpu": "2"},
                    "requests": {"cpu": "1"},
                },
            }
        ],
        "overhead": {"cpu": "250m", "memory": "128Mi"},
    }
    assert _requests(spec) == {"cpu": 1250, "memory": 128 * 2**20, "nvidia.com/gpu": 2}


def test_non_zero_defaults_for_scoring() -> None:
    parsed = parse_pod(pod("p", requests={"cpu": "0"}))
    assert parsed.requests == {}
    assert parsed.nonzero_cpu == 0  # explicitly 0 stays 0
    assert parsed.nonzero_memory == 200 * 2**20  # missing memory gets the default


def test_namespace_gets_its_metadata_name_label() -> None:
    assert parse_namespace({"metadata": {"name": "ml"}}).labels == {
        "kubernetes.io/metadata.name": "ml"
    }


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda p: p["metadata"]["labels"].update({"count": 8}),
            "Pod default/p: metadata.labels['count']: "
            "expected a string, got int 8 (quote it in YAML)",
        ),
        (
            lambda p: p["spec"]["containers"][0]["resources"].update({"requests": {"cpu": "lots"}}),
            "Pod default/p: spec.containers[0].resources.requests.cpu: invalid quantity 'lots'",
        ),
        (
            lambda p: p["spec"]["containers"][0]["resources"].update({"requests": {"cpu": "-1"}}),
            "Pod default/p: spec.containers[0].resources.requests.cpu: must be non-negative",
        ),
        (
            lambda p: p["spec"].update(tolerations=[{"key": "k", "operator": "Above"}]),
            "Pod default/p: spec.tolerations[0].operator: unknown operator 'Above'",
        ),
        (
            lambda p: p["spec"].update(tolerations=[{"operator": "Equal", "value": "v"}]),
            "Pod default/p: spec.tolerations[0].operator: must be Exists when key is empty",
        ),
        (
            lambda p: p["spec"].update(tolerations="all"),
            "Pod default/p: spec.tolerations: expected a list, got str",
        ),
        (
            lambda p: p["spec"].update(
                topologySpreadConstraints=[
                    {"maxSkew": 0, "topologyKey": "z", "whenUnsatisfiable": "DoNotSchedule"}
                ]
            ),
            "Pod default/p: spec.topologySpreadConstraints[0].maxSkew: must be an integer greater",
        ),
        (
            lambda p: p["spec"].update(
                topologySpreadConstraints=[
                    {"maxSkew": 1, "topologyKey": "z", "whenUnsatisfiable": "Sometimes"}
                ]
            ),
            "Pod default/p: spec.topologySpreadConstraints[0].whenUnsatisfiable: expected",
        ),
        (
            lambda p: p["spec"].update(
                affinity={
                    "podAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {}}]
                    }
                }
            ),
            "Pod default/p: spec.affinity.podAffinity."
            "requiredDuringSchedulingIgnoredDuringExecution"
            "[0].topologyKey: must be set",
        ),
        (
            lambda p: p["spec"].update(
                affinity={
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {"key": "k", "operator": "Like", "values": ["v"]}
                                    ]
                                }
                            ]
                        }
                    }
                }
            ),
            "nodeSelectorTerms[0].matchExpressions[0].operator: unknown operator 'Like'",
        ),
        (
            lambda p: p["spec"].update(
                affinity={
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {"key": "k", "operator": "Gt", "values": ["1", "2"]}
                                    ]
                                }
                            ]
                        }
                    }
                }
            ),
            "matchExpressions[0].values: must have exactly one value for operator Gt",
        ),
        (
            lambda p: p["spec"].update(
                affinity={
                    "nodeAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [
                            {"weight": 0, "preference": {}}
                        ]
                    }
                }
            ),
            "preferredDuringSchedulingIgnoredDuringExecution[0].weight: "
            "must be an integer in 1..100",
        ),
    ],
)
def test_malformed_pod_errors_name_object_and_field(mutate: Any, expected: str) -> None:
    raw = pod("p", labels={})
    mutate(raw)
    with pytest.raises(SchedulerInputError) as error:
        parse_pod(raw)
    assert expected in str(error.value)
    assert str(error.value).startswith("Pod default/p: ")


def test_of_several_malformed_fields_the_first_in_reading_order_is_named() -> None:
    """Resources before node selection before pod affinity before spread: always the same one."""
    raw = pod("p", labels={})
    raw["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "lots"}}
    raw["spec"]["tolerations"] = "all"
    raw["spec"]["affinity"] = {
        "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{}]},
        "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{}]},
    }
    raw["spec"]["topologySpreadConstraints"] = [{"maxSkew": 0}]
    messages = []
    for field in ("containers", "tolerations", "podAffinity", "podAntiAffinity"):
        with pytest.raises(SchedulerInputError) as error:
            parse_pod(raw)
        messages.append(str(error.value))
        if field == "containers":
            raw["spec"]["containers"][0]["resources"] = {}
        elif field == "tolerations":
            del raw["spec"]["tolerations"]
        else:
            del raw["spec"]["affinity"][field]
    with pytest.raises(SchedulerInputError) as error:
        parse_pod(raw)
    messages.append(str(error.value))
    assert [message.split(": ")[1] for message in messages] == [
        "spec.containers[0].resources.requests.cpu",
        "spec.tolerations",
        "spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey",
        "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0]"
        ".topologyKey",
        "spec.topologySpreadConstraints[0].maxSkew",
    ]


def test_malformed_node_errors() -> None:
    with pytest.raises(SchedulerInputError, match=r"^Node n1: spec.taints\[0\].effect: unknown"):
        parse_node({"metadata": {"name": "n1"}, "spec": {"taints": [{"key": "k", "effect": "X"}]}})
    with pytest.raises(SchedulerInputError, match=r"^Node <unnamed>: metadata.name: must be set"):
        parse_node({"metadata": {}})
    with pytest.raises(SchedulerInputError, match=r"status.allocatable.cpu: invalid quantity"):
        parse_node({"metadata": {"name": "n"}, "status": {"allocatable": {"cpu": "x"}}})


def test_bound_to_copies_every_field_but_the_node() -> None:
    original = parse_pod({"metadata": {"name": "p"}, "spec": {}})
    for index, slot in enumerate(type(original).__slots__):
        setattr(original, slot, f"value-{index}")  # a distinct object per field
    bound = original.bound_to("node-a")
    for slot in type(original).__slots__:
        if slot == "node_name":
            assert bound.node_name == "node-a"
        else:
            assert getattr(bound, slot) is getattr(original, slot), slot


def test_pods_of_one_spec_share_what_their_static_fields_parse_to() -> None:
    """Node selector, node affinity and tolerations are parsed once per distinct static key
    (`parse_pod`'s memo); the pods differ in everything else, and a malformed spec is never
    kept, so it is refused, naming its pod, every time."""
    tolerations = [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    first, second = pod("a", labels={"x": "1"}), pod("b", labels={"x": "2"})
    for raw in (first, second):
        raw["spec"]["tolerations"] = tolerations
        raw["spec"]["nodeSelector"] = {"pool": "gpu"}
    a, b = parse_pod(first), parse_pod(second)
    assert a.tolerations is b.tolerations and a.node_selector is b.node_selector
    assert (a.key, b.key, a.labels, b.labels) == ("default/a", "default/b", {"x": "1"}, {"x": "2"})
    assert a.static_key == b.static_key
    other = pod("c", labels={})
    other["spec"]["tolerations"] = [{"key": "gpu", "operator": "Exists", "effect": "NoExecute"}]
    assert parse_pod(other).tolerations[0].effect == "NoExecute"
    bad = pod("d", labels={})
    bad["spec"]["tolerations"] = [{"key": "gpu", "operator": "Above"}]
    for _ in range(2):
        with pytest.raises(SchedulerInputError, match=r"^Pod default/d: spec.tolerations\[0\]"):
            parse_pod(bad)


def test_a_static_field_that_is_not_json_is_still_named() -> None:
    raw = pod("p", labels={})
    raw["spec"]["nodeSelector"] = {"pool": object()}
    with pytest.raises(SchedulerInputError, match=r"^Pod default/p: spec.nodeSelector\['pool'\]"):
        parse_pod(raw)


def test_the_static_fields_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from gputopo.scheduler.model import pod as pod_module

    monkeypatch.setattr(pod_module, "_STATIC_PARSED", {})
    monkeypatch.setattr(pod_module, "_STATIC_PARSED_LIMIT", 2)
    for index in range(5):
        raw = pod(f"p{index}", labels={})
        raw["spec"]["nodeSelector"] = {"pool": str(index)}
        assert parse_pod(raw).node_selector == {"pool": str(index)}
        assert len(pod_module._STATIC_PARSED) <= 2


def test_a_selector_key_orjson_refuses_still_parses_with_its_own_static_key() -> None:
    raw = pod("p", labels={})
    raw["spec"]["nodeSelector"] = {1: "a"}  # YAML reads an unquoted 1 as a number
    parsed = parse_pod(raw)
    assert parsed.node_selector == {"1": "a"}
    assert parsed.static_key.startswith("json:")
    assert parsed.static_key != parse_pod(pod("q", labels={})).static_key
