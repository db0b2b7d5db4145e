"""The extender's verbs: kube-scheduler's wire format, gputopo's verdicts and rescaled scores."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from ext_builders import GPU_PACKING_PROFILE, gpu_node, gpu_pod

from scheduler.cli import main
from scheduler.extender import (
    NOT_IN_CACHE_REASON,
    Extender,
    ExtenderArgsError,
    ExtenderCache,
    ExtenderRequest,
    ExtenderServer,
    rescale,
)
from scheduler.profile import parse_profile
from scheduler.runtime.framework import CoreFramework
from scheduler.runtime.kube import KubeApi

NO_SCHEDULE_SLA = {"key": "gputopo.io/sla", "value": "900", "effect": "NoSchedule"}


def _framework(profile: dict[str, Any] | None = None) -> CoreFramework:
    framework = CoreFramework(parse_profile(profile, "test") if profile else None)
    for node in (
        gpu_node("packed"),
        gpu_node("empty"),
        gpu_node("tainted", taints=[NO_SCHEDULE_SLA]),
        gpu_node("small", gpus=1),
    ):
        framework.upsert_node(node)
    framework.upsert_pod(gpu_pod("training", gpus=6, cpu="8", node_name="packed"))
    return framework


def _names_request(pod: dict[str, Any], names: list[str]) -> ExtenderRequest:
    return ExtenderRequest.from_json({"Pod": pod, "NodeNames": names})


def test_filter_splits_candidates_into_passed_failed_and_unresolvable() -> None:
    extender = Extender(_framework())
    answer = extender.filter(
        _names_request(gpu_pod("job", gpus=2), ["packed", "empty", "tainted", "small", "gone"])
    )
    assert answer["NodeNames"] == ["packed", "empty"]
    assert answer["Nodes"] is None
    assert answer["Error"] == ""
    assert answer["FailedNodes"] == {
        "small": "Insufficient nvidia.com/gpu",
        "gone": NOT_IN_CACHE_REASON,
    }
    assert answer["FailedAndUnresolvableNodes"] == {
        "tainted": "node(s) had untolerated taint {gputopo.io/sla: 900}"
    }


def test_filter_with_a_node_list_answers_with_the_callers_node_objects() -> None:
    extender = Extender(_framework())
    sent = [gpu_node("empty"), gpu_node("small", gpus=1)]
    sent[0]["metadata"]["resourceVersion"] = "42"
    answer = extender.filter(
        ExtenderRequest.from_json(
            {"Pod": gpu_pod("job", gpus=2), "Nodes": {"kind": "NodeList", "items": sent}}
        )
    )
    assert answer["NodeNames"] is None
    assert answer["Nodes"]["items"] == [sent[0]]
    assert list(answer["FailedNodes"]) == ["small"]


def test_filter_refuses_every_node_for_a_gated_pod() -> None:
    extender = Extender(_framework())
    gated = gpu_pod("job", gpus=1, schedulingGates=[{"name": "example.com/wait"}])
    answer = extender.filter(_names_request(gated, ["packed", "empty"]))
    assert answer["NodeNames"] == []
    assert set(answer["FailedNodes"]) == {"packed", "empty"}
    assert "scheduling gates" in answer["FailedNodes"]["packed"]


def test_prioritize_with_a_gpu_packing_profile_prefers_the_partly_used_node() -> None:
    extender = Extender(_framework(GPU_PACKING_PROFILE))
    priorities = extender.prioritize(
        _names_request(gpu_pod("job", gpus=2), ["empty", "packed", "tainted"])
    )
    assert priorities == [
        {"Host": "empty", "Score": 0},
        {"Host": "packed", "Score": 10},
        {"Host": "tainted", "Score": 0},
    ]


def test_prioritize_with_the_default_profile_spreads_like_kube_scheduler() -> None:
    extender = Extender(_framework())
    priorities = extender.prioritize(_names_request(gpu_pod("job", gpus=2), ["empty", "packed"]))
    assert priorities == [{"Host": "empty", "Score": 10}, {"Host": "packed", "Score": 0}]


def test_prioritize_reuses_the_filter_cycle_only_while_nothing_changed() -> None:
    framework = _framework(GPU_PACKING_PROFILE)
    extender = Extender(framework)
    job = gpu_pod("job", gpus=2)
    job["metadata"]["resourceVersion"] = "7"
    request = _names_request(job, ["empty", "packed"])
    assert extender.filter(request)["NodeNames"] == ["empty", "packed"]
    assert extender._last is not None  # the filter's cycle, kept for the prioritize
    # The watch fills "packed" up between the two calls: a reused cycle would rank it first.
    framework.upsert_pod(gpu_pod("more", gpus=2, node_name="packed"))
    assert extender.prioritize(request) == [
        {"Host": "empty", "Score": 10},
        {"Host": "packed", "Score": 0},
    ]
    assert extender.filter(request)["NodeNames"] == ["empty"]


def test_rescale_maps_totals_linearly_onto_zero_to_ten() -> None:
    names = ["a", "b", "c", "d"]
    assert rescale(names, {"a": 100, "b": 150, "c": 200}) == [0, 5, 10, 0]
    assert rescale(names, {"a": 100, "b": 105, "c": 120}) == [0, 3, 10, 0]  # 2.5 rounds up
    assert rescale(names, {"a": 7, "b": 7}) == [10, 10, 0, 0]
    assert rescale(names, {}) == [0, 0, 0, 0]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "expected a JSON object"),
        ({"NodeNames": ["a"]}, "ExtenderArgs.Pod"),
        ({"Pod": {"metadata": {"name": "p"}}}, "expected Nodes or NodeNames"),
        ({"Pod": {"metadata": {"name": "p"}}, "NodeNames": "a"}, "ExtenderArgs.NodeNames"),
        ({"Pod": {"metadata": {"name": "p"}}, "Nodes": {"items": [{}]}}, "items[0]"),
    ],
)
def test_bad_extender_args_name_the_field(body: object, field: str) -> None:
    with pytest.raises(ExtenderArgsError, match=field.replace("[", r"\[").replace("]", r"\]")):
        ExtenderRequest.from_json(body)


def test_watch_events_keep_bound_running_pods_only() -> None:
    framework = CoreFramework()
    watch = ExtenderCache(KubeApi(api_client=None), framework)
    watch.on_add("Node", gpu_node("n1"))
    running = gpu_pod("running", gpus=4, node_name="n1")
    watch.on_add("Pod", running)
    watch.on_add("Pod", gpu_pod("pending", gpus=4))
    assert framework.snapshot.pod("default/running") is not None
    assert framework.snapshot.pod("default/pending") is None
    finished = json.loads(json.dumps(running))
    finished["status"]["phase"] = "Succeeded"
    watch.on_update("Pod", running, finished)
    assert framework.snapshot.pod("default/running") is None
    watch.on_add("Pod", running)
    watch.on_delete("Pod", running)
    assert framework.snapshot.pod("default/running") is None
    watch.on_delete("Node", gpu_node("n1"))
    assert framework.node_names() == []


@pytest.fixture
def server() -> Iterator[ExtenderServer]:
    http = ExtenderServer("127.0.0.1:0", Extender(_framework(GPU_PACKING_PROFILE)))
    http.start()
    yield http
    http.stop()


def _post(port: int, path: str, body: object) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_http_verbs_speak_go_field_names_under_any_url_prefix(server: ExtenderServer) -> None:
    args = {"Pod": gpu_pod("job", gpus=2), "NodeNames": ["packed", "small"]}
    status, filtered = _post(server.port, "/gputopo/v1/filter", args)
    assert status == 200
    assert set(filtered) == {
        "Nodes",
        "NodeNames",
        "FailedNodes",
        "FailedAndUnresolvableNodes",
        "Error",
    }
    assert filtered["NodeNames"] == ["packed"]
    status, priorities = _post(server.port, "/prioritize", args)
    assert status == 200
    assert priorities == [{"Host": "packed", "Score": 10}, {"Host": "small", "Score": 0}]


def test_http_bad_request_is_a_400_naming_the_field(server: ExtenderServer) -> None:
    status, answer = _post(server.port, "/filter", {"NodeNames": []})
    assert status == 400
    assert "ExtenderArgs.Pod" in answer["Error"]
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/readyz", timeout=5) as ready:
        assert ready.read() == b"ok"


def test_cli_extender_with_an_unreadable_kubeconfig_fails_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = main(["extender", "--kubeconfig", "/nonexistent/kubeconfig", "--listen", ":0"])
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gputopo-scheduler extender: kubeconfig '/nonexistent/kubeconfig'")
    assert "\n" not in err
