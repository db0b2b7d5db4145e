"""The extender against callers it must not serve, on the real API server and kube-scheduler.

Why: the extender's ServiceAccount may bind any pod to any node. The real kube-scheduler,
configured as docs/extender.md says (enableHTTPS, a tlsConfig client certificate), schedules
through it; a caller without that certificate cannot even send a request; and a caller with it
(kube-scheduler gone wrong, or its stolen key) still cannot bind a pod to a node gputopo's own
filters refuse — a control-plane node, a node without GPUs, a node that does not exist.
"""

from __future__ import annotations

import contextlib
import json
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gputopo.scheduler.runtime.kube import JsonDict
from tests.controlplane import ControlPlane, free_port
from tests.integration.extender_tls import (
    ExtenderPki,
    extender_configuration,
    extender_process,
    post,
)
from tests.integration.scheduler_env import Cluster, gpu_node, gpu_pod, scheduler_rbac
from tests.polling import eventually

pytestmark = pytest.mark.integration

POOL = {"gputopo.io/test-pool": "extender-security"}
EXTENDED_SCHEDULER = "kube-with-gputopo-tls"
UNSCHEDULED = "nobody-schedules-this"  # no scheduler runs under this name: the pod waits
CONTROL_PLANE = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}


@pytest.fixture
def rbac(control_plane: ControlPlane) -> Iterator[None]:
    with scheduler_rbac(control_plane):
        yield


def _binding(pod: JsonDict, node: str) -> JsonDict:
    meta = pod["metadata"]
    return {
        "PodName": meta["name"],
        "PodNamespace": meta["namespace"],
        "PodUID": meta["uid"],
        "Node": node,
    }


def _extender_log(workdir: Path, message: str) -> list[JsonDict]:
    entries = []
    for line in (workdir / "extender.log").read_text().splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("msg") == message:
                entries.append(entry)
    return entries


def test_only_kube_schedulers_certificate_and_only_nodes_the_filters_pass_can_bind(
    control_plane: ControlPlane,
    cluster: Cluster,
    namespace: str,
    rbac: None,
    tmp_path: Path,
) -> None:
    cluster.create_node(gpu_node("sec-gpu", 8, labels=POOL))
    cluster.create_node(
        gpu_node(
            "sec-control-plane",
            8,
            labels={**POOL, "node-role.kubernetes.io/control-plane": ""},
            taints=[CONTROL_PLANE],
        )
    )
    cluster.create_node(gpu_node("sec-cpu-only", 0, labels=POOL))
    pki = ExtenderPki.mint(tmp_path / "pki")
    port, probe_port = free_port(), free_port()
    extender = extender_process(control_plane, tmp_path, port, probe_port, pki)
    scheduler = control_plane.start_scheduler_with_config(
        "kube-scheduler-extender-tls",
        {
            "apiVersion": "kubescheduler.config.k8s.io/v1",
            "kind": "KubeSchedulerConfiguration",
            "profiles": [{"schedulerName": EXTENDED_SCHEDULER}],
            "extenders": [extender_configuration(pki, port)],
        },
    )
    try:
        # kube-scheduler, with its client certificate, schedules through the extender.
        cluster.create_pod(
            namespace, gpu_pod("legit", 2, scheduler_name=EXTENDED_SCHEDULER, node_selector=POOL)
        )
        eventually(lambda: cluster.node_of(namespace, "legit"), 30, "kube-scheduler binding")
        assert cluster.node_of(namespace, "legit") == "sec-gpu"
        assert [e["pod"] for e in _extender_log(tmp_path, "pod bound by the extender")] == [
            f"{namespace}/legit"
        ]

        tenant = cluster.create_pod(
            namespace, gpu_pod("tenant", 4, scheduler_name=UNSCHEDULED, node_selector=POOL)
        )
        forged = _binding(tenant, "sec-gpu")

        # No certificate, another CA's certificate with kube-scheduler's name, plain HTTP:
        # no request gets through, for bind or for filter (which would tell the inventory).
        for certificate in (None, pki.rogue):
            for verb, body in (
                ("bind", forged),
                ("filter", {"Pod": tenant, "NodeNames": ["sec-gpu"]}),
            ):
                with pytest.raises(OSError):
                    post(port, verb, body, pki.client_context(certificate))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(
                b"POST /gputopo/bind HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(json.dumps(forged))}\r\n\r\n".encode()
                + json.dumps(forged).encode()
            )
            with contextlib.suppress(ConnectionResetError):
                assert b"HTTP/1.1" not in sock.recv(4096)
        with pytest.raises(OSError):  # the probe port serves no verbs
            urllib.request.urlopen(
                urllib.request.Request(
                    f"http://127.0.0.1:{probe_port}/gputopo/bind",
                    data=json.dumps(forged).encode(),
                ),
                timeout=5,
            )

        # With kube-scheduler's certificate, a bind gputopo's filters refuse is an Error.
        trusted = pki.client_context(pki.client)
        refusals = {
            "sec-control-plane": "had untolerated taint {node-role.kubernetes.io/control-plane: }",
            "sec-cpu-only": "Insufficient nvidia.com/gpu",
            "no-such-node": "node(s) not yet in gputopo's cache",
        }
        for node, reason in refusals.items():
            status, answer = post(port, "bind", _binding(tenant, node), trusted)
            assert status == 200
            assert answer["Error"].startswith(
                f"bind {namespace}/tenant to {node}: the node fails gputopo's filters: "
            )
            assert reason in answer["Error"]
        status, answer = post(port, "bind", {**forged, "PodUID": "not-the-uid"}, trusted)
        assert "the pod's UID is" in answer["Error"]
        assert cluster.node_of(namespace, "tenant") == ""  # nothing above bound it
        refused = _extender_log(tmp_path, "extender bind refused")
        assert [e["node"] for e in refused] == [*refusals, "sec-gpu"]

        # The same caller, to a node the filters pass: bound, so the check refuses only what
        # it should.
        status, answer = post(port, "bind", forged, trusted)
        assert (status, answer) == (200, {"Error": ""})
        assert cluster.node_of(namespace, "tenant") == "sec-gpu"
    finally:
        scheduler.stop()
        extender.stop()
    log = (tmp_path / "extender.log").read_text()
    assert "Traceback" not in log, log
    assert all(line.startswith(("{", "$ ")) for line in log.splitlines()), log  # "$": the command
