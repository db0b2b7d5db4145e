"""``why POD``: simulate's explanation for one live pod, on the live objects."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
import yaml

from gputopo.core.cli import CliError
from gputopo.core.contract import DEFAULT_CONTRACT
from gputopo.core.kube import KubeClient
from gputopo.kubectl import why
from tests.unit.agent.machines import dgx_h100
from tests.unit.kubectl.fake_api import FakeApi
from tests.unit.kubectl.kube_objects import node, pod, two_domain_h100

C = DEFAULT_CONTRACT


def _namespace(name: str) -> dict[str, Any]:
    return {"kind": "Namespace", "metadata": {"name": name}}


def _cluster(*extra: dict[str, Any]) -> FakeApi:
    sla_taint = [{"key": C.sla_taint, "value": "900", "effect": "NoSchedule"}]
    return FakeApi(
        [
            _namespace("ml"),
            node("h100-a", two_domain_h100()),
            node("h100-b", dgx_h100(), taints=sla_taint),
            node("cpu-1", gpus=0),
            pod("big-a", 6, "h100-a"),
            pod("waiting", 8),  # another pending pod: holds nothing
            *extra,
        ]
    )


def _explain(api: FakeApi, name: str) -> why.Explanation:
    return why.explain(cast(KubeClient, api), "ml", name)


def test_pending_pod_gets_every_nodes_reason_in_kube_scheduler_words() -> None:
    api = _cluster(pod("train", 4))
    explanation = _explain(api, "train")
    result = explanation.result
    assert result is not None and result.node is None
    assert result.message == (
        "0/3 nodes are available: 1 node(s) had untolerated taint {gputopo.io/sla: 900}, "
        "2 Insufficient nvidia.com/gpu."
    )
    reasons = {name: d.reasons for name, d in result.diagnosis().items()}
    assert reasons["h100-a"] == ("Insufficient nvidia.com/gpu",)
    assert (explanation.nodes, explanation.running_pods) == (3, 1)
    text = why.render_text(explanation)
    assert "pod ml/train: Pending, schedulerName gputopo-scheduler" in text
    assert "  not placed: 0/3 nodes are available:" in text
    assert any(line.split()[:2] == ["h100-a", "Insufficient"] for line in text.splitlines())


def test_a_pod_that_fits_now_is_placed_and_the_report_says_why_it_may_still_wait() -> None:
    explanation = _explain(_cluster(pod("small", 2)), "small")
    assert explanation.result is not None and explanation.result.node == "h100-a"
    text = why.render_text(explanation)
    assert "fits: would be placed on h100-a" in text
    assert "* h100-a" in text


def test_a_bound_pod_says_where_and_stops() -> None:
    api = _cluster()
    explanation = _explain(api, "big-a")
    text = why.render_text(explanation)
    assert text == "pod ml/big-a is bound to node h100-a: nothing to explain."
    assert [path for path, _ in api.queries] == ["/api/v1/namespaces/ml/pods/big-a"]


def test_a_missing_pod_is_one_line() -> None:
    with pytest.raises(CliError, match=r'^pod "ghost" not found in namespace "ml"$'):
        _explain(_cluster(), "ghost")


def test_another_schedulers_pod_is_explained_with_a_note() -> None:
    explanation = _explain(_cluster(pod("kube", 1, scheduler_name="default-scheduler")), "kube")
    text = why.render_text(explanation)
    assert "this pod waits for 'default-scheduler'" in text


def test_the_pods_own_condition_is_quoted() -> None:
    stuck = pod("stuck", 16)
    stuck["status"]["conditions"] = [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3"}
    ]
    text = why.render_text(_explain(_cluster(stuck), "stuck"))
    assert "  the pod says: Unschedulable: 0/3" in text


def test_a_pod_the_scheduler_cannot_read_gets_the_parse_error_as_its_reason() -> None:
    bad = pod("bad", 1)
    bad["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] = "many"
    explanation = _explain(_cluster(bad), "bad")
    assert explanation.parse_error is not None and "Pod ml/bad" in explanation.parse_error
    assert "unschedulable: Pod ml/bad" in why.render_text(explanation)


def test_an_unreadable_annotation_is_a_note_and_the_node_is_read_from_its_labels() -> None:
    garbage = node("h100-z", annotation="{not json", labels={C.gpu_present: "true"})
    explanation = _explain(_cluster(garbage, pod("train", 1)), "train")
    assert explanation.nodes == 4
    assert len(explanation.notes) == 1 and "Node h100-z" in explanation.notes[0]
    assert explanation.result is not None
    assert explanation.result.diagnosis()["h100-z"].feasible  # 8 GPUs by its allocatable


def test_an_unreadable_node_is_left_out_with_a_note() -> None:
    broken = node("h100-y", dgx_h100())
    broken["spec"] = {"taints": [{"key": "x", "effect": "Sometimes"}]}
    explanation = _explain(_cluster(broken, pod("train", 1)), "train")
    assert explanation.nodes == 3
    assert len(explanation.notes) == 1 and "Node h100-y" in explanation.notes[0]
    assert explanation.notes[0].endswith("; skipped")


def test_gated_pod_says_so() -> None:
    gated = pod("gated", 1, schedulingGates=[{"name": "example.com/wait"}])
    explanation = _explain(_cluster(gated), "gated")
    assert explanation.result is not None
    assert explanation.result.message.startswith("Scheduling is blocked")


def test_json_and_yaml_hold_the_simulation() -> None:
    explanation = _explain(_cluster(pod("train", 4)), "train")
    document = json.loads(why.render_document(explanation, "json"))
    assert document == yaml.safe_load(why.render_document(explanation, "yaml"))
    assert document["pod"] == "ml/train" and document["boundTo"] is None
    simulation = document["simulation"]
    assert simulation["node"] is None and simulation["clusterNodes"] == 3
    assert simulation["nodes"]["h100-b"]["reasons"] == [
        "node(s) had untolerated taint {gputopo.io/sla: 900}"
    ]


def test_a_gang_member_is_simulated_alone_with_a_note() -> None:
    member = pod("worker-0", 2)
    member["metadata"]["labels"] = {"scheduling.x-k8s.io/pod-group": "train"}
    explanation = _explain(_cluster(member), "worker-0")
    assert explanation.pod_group == "train"
    assert "a member of PodGroup 'train'" in why.render_text(explanation)
    assert why.document(explanation)["podGroup"] == "train"
