"""Smoke tests: every piece of the integration environment is the real thing, and works."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import prometheus_client
import pytest
from kubernetes import client

from hack.testenv import Tools
from hack.testenv.tools import KUBE_APISERVER, PROMETHEUS
from tests.conftest import StartPrometheus
from tests.controlplane import ClusterObjects, ControlPlane, ManagedProcess, free_port, kwok_node
from tests.controlplane.processes import ComponentFailedError
from tests.controlplane.prometheus import PrometheusServer
from tests.polling import eventually

pytestmark = pytest.mark.integration

MERGE_PATCH = "application/merge-patch+json"
SLA_TAINT_KEY = "gputopo.io/sla"


def _pod(name: str, node_selector: dict[str, str], **spec: object) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(
            containers=[client.V1Container(name="main", image="registry.k8s.io/pause:3.10")],
            node_selector=node_selector,
            **spec,
        ),
    )


def _node_ready(core: client.CoreV1Api, name: str) -> bool:
    conditions = core.read_node(name).status.conditions or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def _jwt_claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert isinstance(claims, dict)
    return claims


def test_version_reports_the_pinned_release(
    control_plane: ControlPlane, testenv_tools: Tools
) -> None:
    version = control_plane.version()

    if testenv_tools.sources[KUBE_APISERVER] == "cache":
        major, minor = testenv_tools.pins.kubernetes_major_minor
        assert version["gitVersion"] == testenv_tools.pins.kubernetes
        assert (version["major"], version["minor"]) == (major, minor)
    assert version["gitVersion"].startswith("v1.")


def test_node_label_patch_round_trips_and_invalid_value_is_rejected(
    kube_admin: client.ApiClient, cluster_objects: ClusterObjects
) -> None:
    core = client.CoreV1Api(kube_admin)
    cluster_objects.create_node(client.V1Node(metadata=client.V1ObjectMeta(name="label-node")))

    core.patch_node(
        "label-node",
        {"metadata": {"labels": {"gputopo.io/nvlink-domain-size": "8"}}},
        _content_type=MERGE_PATCH,
    )
    assert core.read_node("label-node").metadata.labels["gputopo.io/nvlink-domain-size"] == "8"

    with pytest.raises(client.ApiException) as rejected:
        core.patch_node(
            "label-node",
            {"metadata": {"labels": {"gputopo.io/interconnect": "nv link!"}}},
            _content_type=MERGE_PATCH,
        )
    assert rejected.value.status == 422
    assert "gputopo.io/interconnect" not in core.read_node("label-node").metadata.labels


def test_scheduler_binds_pod_to_kwok_node_which_runs_it(
    kube_admin: client.ApiClient,
    kube_scheduler: ManagedProcess,
    kwok: ManagedProcess,
    namespace: str,
    cluster_objects: ClusterObjects,
) -> None:
    core = client.CoreV1Api(kube_admin)
    cluster_objects.create_node(kwok_node("kwok-run-0"))
    eventually(lambda: _node_ready(core, "kwok-run-0"), 20, "kwok to make kwok-run-0 Ready")

    core.create_namespaced_pod(namespace, _pod("sleeper", {"kubernetes.io/hostname": "kwok-run-0"}))

    def running() -> bool:
        pod = core.read_namespaced_pod("sleeper", namespace)
        return pod.spec.node_name == "kwok-run-0" and pod.status.phase == "Running"

    eventually(running, 30, "pod sleeper bound to kwok-run-0 and Running")


def test_apiserver_accepts_gt_toleration_with_the_gate_on(
    kube_admin: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube_admin)
    toleration = client.V1Toleration(
        key=SLA_TAINT_KEY, operator="Gt", value="950", effect="NoSchedule"
    )

    core.create_namespaced_pod(
        namespace, _pod("tolerant", {"no-such-node": "x"}, tolerations=[toleration])
    )

    stored = core.read_namespaced_pod("tolerant", namespace).spec.tolerations
    assert any(t.key == SLA_TAINT_KEY and t.operator == "Gt" and t.value == "950" for t in stored)


def test_scheduler_places_gt_toleration_only_above_the_threshold(
    kube_admin: client.ApiClient,
    kube_scheduler: ManagedProcess,
    kwok: ManagedProcess,
    namespace: str,
    cluster_objects: ClusterObjects,
) -> None:
    core = client.CoreV1Api(kube_admin)
    group = {"gputopo-test/group": namespace}
    for name, sla in (("sla-980", "980"), ("sla-900", "900")):
        taint = client.V1Taint(key=SLA_TAINT_KEY, value=sla, effect="NoSchedule")
        cluster_objects.create_node(kwok_node(name, labels=group, taints=[taint]))
    for name in ("sla-980", "sla-900"):
        eventually(lambda name=name: _node_ready(core, name), 20, f"kwok to make {name} Ready")
    toleration = client.V1Toleration(
        key=SLA_TAINT_KEY, operator="Gt", value="950", effect="NoSchedule"
    )

    for index in range(3):
        core.create_namespaced_pod(namespace, _pod(f"gt-{index}", group, tolerations=[toleration]))
    core.create_namespaced_pod(namespace, _pod("intolerant", group))

    def all_bound() -> bool:
        pods = [core.read_namespaced_pod(f"gt-{index}", namespace) for index in range(3)]
        return all(pod.spec.node_name for pod in pods)

    eventually(all_bound, 30, "three Gt-tolerating pods to be bound")
    placed = {core.read_namespaced_pod(f"gt-{i}", namespace).spec.node_name for i in range(3)}
    assert placed == {"sla-980"}

    def refused() -> bool:
        conditions = core.read_namespaced_pod("intolerant", namespace).status.conditions or []
        return any(c.type == "PodScheduled" and c.reason == "Unschedulable" for c in conditions)

    eventually(refused, 30, "the pod without the toleration to be reported Unschedulable")
    assert core.read_namespaced_pod("intolerant", namespace).spec.node_name is None


def test_service_account_without_rbac_is_forbidden(
    control_plane: ControlPlane, namespace: str
) -> None:
    control_plane.create_service_account(namespace, "nobody")
    api = control_plane.client_for_service_account(namespace, "nobody")

    with pytest.raises(client.ApiException) as refused:
        client.CoreV1Api(api).list_node()

    assert refused.value.status == 403
    assert f"system:serviceaccount:{namespace}:nobody" in str(refused.value.body)


def test_pod_bound_token_carries_the_node_identity(
    control_plane: ControlPlane, namespace: str, cluster_objects: ClusterObjects
) -> None:
    core = client.CoreV1Api(control_plane.admin)
    node = cluster_objects.create_node(
        client.V1Node(metadata=client.V1ObjectMeta(name="agent-node"))
    )
    control_plane.create_service_account(namespace, "agent")
    pod = core.create_namespaced_pod(
        namespace,
        _pod("agent", {}, node_name="agent-node", service_account_name="agent"),
    )

    token = control_plane.service_account_token(namespace, "agent", bound_pod=pod)
    claims = _jwt_claims(token)
    review = client.AuthenticationV1Api(
        control_plane.client_for_token(token)
    ).create_self_subject_review(client.V1SelfSubjectReview())

    bound = claims["kubernetes.io"]
    assert isinstance(bound, dict)
    assert bound["node"] == {"name": "agent-node", "uid": node.metadata.uid}
    assert bound["pod"]["name"] == "agent"
    user = review.status.user_info
    assert user.username == f"system:serviceaccount:{namespace}:agent"
    assert user.extra["authentication.kubernetes.io/node-name"] == ["agent-node"]


def test_prometheus_scrapes_a_loopback_target_and_answers_queries(
    start_prometheus: StartPrometheus,
) -> None:
    registry = prometheus_client.CollectorRegistry()
    gauge = prometheus_client.Gauge("gputopo_smoke_value", "smoke test value", registry=registry)
    gauge.set(42)
    port = free_port()
    server, thread = prometheus_client.start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        prometheus = start_prometheus({"smoke": [f"127.0.0.1:{port}"]}, scrape_interval="1s")

        samples = prometheus.wait_for('gputopo_smoke_value{job="smoke"}')

        assert [sample.value for sample in samples] == [42.0]
        assert samples[0].labels["instance"] == f"127.0.0.1:{port}"
        assert [s.value for s in prometheus.query('up{job="smoke"}')] == [1.0]
    finally:
        server.shutdown()
        thread.join(5)


def test_prometheus_killed_by_a_signal_while_starting_is_restarted_once(
    testenv_tools: Tools, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    crashed = tmp_path / "crashed"
    wrapper = tmp_path / "prometheus"
    real = testenv_tools.require(PROMETHEUS)
    crash_first_start = f"if [ ! -e {crashed} ]; then touch {crashed}; kill -SEGV $$; fi"
    wrapper.write_text(f'#!/bin/sh\n{crash_first_start}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)

    server = PrometheusServer(wrapper, tmp_path / "work", {"none": ["127.0.0.1:1"]})
    try:
        assert server.process.alive()
        assert "died of signal 11 while starting; retrying once" in capsys.readouterr().err
    finally:
        server.stop()


def test_prometheus_that_exits_by_itself_is_not_retried(tmp_path: Path) -> None:
    failing = tmp_path / "prometheus"
    failing.write_text("#!/bin/sh\necho 'bad flag' >&2\nexit 1\n")
    failing.chmod(0o755)

    with pytest.raises(ComponentFailedError, match="exited with status 1"):
        PrometheusServer(failing, tmp_path / "work", {"none": ["127.0.0.1:1"]})
