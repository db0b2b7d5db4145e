"""The extender's verbs: kube-scheduler's wire format, gputopo's verdicts and rescaled scores."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from gputopo.scheduler.cli import main
from gputopo.scheduler.extender import (
    NOT_IN_CACHE_REASON,
    BindingRequest,
    Extender,
    ExtenderArgsError,
    ExtenderCache,
    ExtenderRequest,
    ExtenderServer,
    PreemptionRequest,
    rescale,
)
from gputopo.scheduler.runtime.core_adapter import CoreFramework
from gputopo.scheduler.runtime.kube import KubeApi
from gputopo.scheduler.scheduling_profile import parse_profile
from tests.unit.scheduler.ext_builders import GPU_PACKING_PROFILE, gpu_node, gpu_pod

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
    with pytest.raises(ExtenderArgsError, match=re.escape(field)):
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


def test_node_and_pod_watches_drop_managed_fields() -> None:
    watch = ExtenderCache(KubeApi(api_client=None), CoreFramework())
    trims = {reflector.kind: reflector.transform for reflector in watch.reflectors}
    bound = gpu_pod("running", gpus=1, node_name="n1")
    bound["metadata"]["managedFields"] = [{"manager": "kube-scheduler", "fieldsV1": {}}]
    for kind in ("Node", "Pod"):
        trim = trims[kind]
        assert trim is not None, kind
        assert "managedFields" not in trim(json.loads(json.dumps(bound)))["metadata"]


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
        assert ready.read() == b"ok\n"


def test_cli_extender_with_an_unreadable_kubeconfig_fails_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = main(["extender", "--kubeconfig", "/nonexistent/kubeconfig", "--listen", ":0"])
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gputopo-scheduler: error: kubeconfig '/nonexistent/kubeconfig'")
    assert "\n" not in err


# -- preempt and bind --------------------------------------------------------------------------


def _preemption_framework() -> CoreFramework:
    framework = CoreFramework()
    framework.upsert_node(gpu_node("full"))
    framework.upsert_node(gpu_node("pinned"))
    framework.upsert_pod(gpu_pod("low-a", gpus=4, node_name="full"))
    framework.upsert_pod(gpu_pod("low-b", gpus=4, node_name="full"))
    framework.upsert_pod(gpu_pod("low-c", gpus=4, node_name="pinned"))
    framework.upsert_pod(gpu_pod("peer", gpus=4, node_name="pinned"))
    return framework


def test_preempt_keeps_the_nodes_where_gputopo_fits_once_the_victims_are_gone() -> None:
    extender = Extender(_preemption_framework())
    request = PreemptionRequest.from_json(
        {
            "Pod": gpu_pod("urgent", gpus=8),
            "NodeNameToMetaVictims": {
                "full": {
                    "Pods": [{"UID": "uid-low-a"}, {"UID": "uid-low-b"}],
                    "NumPDBViolations": 1,
                },
                # kube-scheduler's victims on "pinned" leave "peer" holding 4 GPUs: not enough
                "pinned": {"Pods": [{"UID": "uid-low-c"}], "NumPDBViolations": 0},
            },
        }
    )
    assert extender.preempt(request) == {
        "NodeNameToMetaVictims": {
            "full": {"Pods": [{"UID": "uid-low-a"}, {"UID": "uid-low-b"}], "NumPDBViolations": 1}
        }
    }
    # The victims were only taken out for the trial: they still count.
    assert extender.filter(_names_request(gpu_pod("small", gpus=1), ["full"]))["NodeNames"] == []


def test_preempt_reads_full_pods_when_not_node_cache_capable() -> None:
    victims = [
        gpu_pod("low-a", gpus=4, node_name="full"),
        gpu_pod("low-b", gpus=4, node_name="full"),
    ]
    request = PreemptionRequest.from_json(
        {
            "Pod": gpu_pod("urgent", gpus=8),
            "NodeNameToVictims": {"full": {"Pods": victims, "NumPDBViolations": 0}},
        }
    )
    assert request.victims == {"full": (("uid-low-a", "uid-low-b"), 0)}
    answer = Extender(_preemption_framework()).preempt(request)
    assert list(answer["NodeNameToMetaVictims"]) == ["full"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"Pod": {}}, "ExtenderPreemptionArgs.Pod"),
        (
            {"Pod": gpu_pod("p"), "NodeNameToMetaVictims": {"n": {"Pods": [{"uid": "x"}]}}},
            "ExtenderPreemptionArgs.NodeNameToMetaVictims[n].Pods[0].UID",
        ),
        (
            {
                "Pod": gpu_pod("p"),
                "NodeNameToVictims": {"n": {"Pods": [], "NumPDBViolations": "1"}},
            },
            "ExtenderPreemptionArgs.NodeNameToVictims[n].NumPDBViolations",
        ),
    ],
)
def test_bad_preemption_args_name_the_field(body: object, field: str) -> None:
    with pytest.raises(ExtenderArgsError, match=re.escape(field)):
        PreemptionRequest.from_json(body)


BINDING = {"PodName": "job", "PodNamespace": "ml", "PodUID": "uid-job", "Node": "n1"}


def test_bind_posts_the_binding_and_reports_api_errors_in_error() -> None:
    framework = CoreFramework()
    framework.upsert_node(gpu_node("n1"))
    job = gpu_pod("job", gpus=1, namespace="ml")
    calls: list[tuple[str, str, str, str]] = []
    extender = Extender(
        framework, binder=lambda *args: calls.append(args), pod_reader=lambda *_: job
    )
    assert extender.bind(BindingRequest.from_json(BINDING)) == {"Error": ""}
    assert calls == [("ml", "job", "uid-job", "n1")]

    def conflict(*_: str) -> None:
        raise RuntimeError("409 Conflict: pod ml/job is already assigned to node n2")

    refused = Extender(framework, binder=conflict, pod_reader=lambda *_: job).bind(
        BindingRequest.from_json(BINDING)
    )
    assert refused == {
        "Error": "bind ml/job to n1: 409 Conflict: pod ml/job is already assigned to node n2"
    }


def test_bad_binding_args_name_the_field() -> None:
    with pytest.raises(ExtenderArgsError, match=r"ExtenderBindingArgs\.PodUID: expected a string"):
        BindingRequest.from_json({**BINDING, "PodUID": 7})


def test_http_preempt_and_bind_verbs(server: ExtenderServer) -> None:
    status, answer = _post(
        server.port,
        "/gputopo/preempt",
        {"Pod": gpu_pod("job", gpus=2), "NodeNameToMetaVictims": {"packed": {"Pods": []}}},
    )
    assert (status, answer) == (
        200,
        {"NodeNameToMetaVictims": {"packed": {"Pods": [], "NumPDBViolations": 0}}},
    )
    status, answer = _post(server.port, "/gputopo/bind", BINDING)
    assert status == 200 and answer["Error"].startswith("bind:")  # the fixture has no API
    status, answer = _post(server.port, "/gputopo/bind", {"PodName": "job"})
    assert (status, answer) == (
        400,
        {"Error": "bind: ExtenderBindingArgs.PodNamespace: expected a string"},
    )


def test_filter_headroom_steps_aside_for_kube_schedulers_own_candidates() -> None:
    """A DGX is kept for 8-GPU pods while an NVLink domain elsewhere takes a 4-GPU pod; when
    kube-scheduler's own filters left only the DGX, the DGX passes."""
    framework = CoreFramework()
    for name, gpus in (("dgx", 8), ("nvl4", 4)):
        node = gpu_node(name, gpus=gpus)
        node["metadata"]["labels"]["gputopo.io/gpu.nvlink-domain-size"] = str(gpus)
        framework.upsert_node(node)
    extender = Extender(framework)
    both = extender.filter(_names_request(gpu_pod("job", gpus=4), ["dgx", "nvl4"]))
    assert both["NodeNames"] == ["nvl4"]
    assert both["FailedNodes"] == {"dgx": "node(s) kept for pods of 8 or more GPUs (headroom)"}
    only_dgx = extender.filter(_names_request(gpu_pod("job", gpus=4), ["dgx"]))
    assert only_dgx["NodeNames"] == ["dgx"]
    assert only_dgx["FailedNodes"] == {}
