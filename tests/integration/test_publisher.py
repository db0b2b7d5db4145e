"""The publisher against a real kube-apiserver: every ownership, idempotence and safety rule.

Machines are hand-built topologies (tests/unit/agent/machines.py) named after the mock
profiles they mirror; the API server, RBAC and admission are real.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from gputopo.agent.publish.cycle import run_cycle
from gputopo.agent.publish.desired import PublishOptions
from gputopo.agent.publish.nrt import GROUP, PLURAL, VERSION, NrtPublisher
from gputopo.agent.publish.writer import Publisher
from gputopo.agent.topology import PciOnlyGpu
from gputopo.core.contract import Contract
from gputopo.core.kube import ClusterConfig, KubeClient
from gputopo.core.retry import Backoff
from tests.controlplane import ClusterObjects, ControlPlane
from tests.unit.agent.machines import dgx_h100, gb200_fabric, nvml_down_with_gpus

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
C = Contract()
FOREIGN_TAINT = {"key": "dedicated", "value": "ml", "effect": "NoSchedule"}


def no_sleep(seconds: float) -> None:
    del seconds


def fast_backoff(attempts: int = 6) -> Backoff:
    return Backoff(base_seconds=0.01, cap_seconds=0.05, max_attempts=attempts, sleep=no_sleep)


@pytest.fixture
def node_name(cluster_objects: ClusterObjects) -> str:
    """A Node with labels, annotations and a taint that belong to somebody else."""
    name = f"gpu-{uuid.uuid4().hex[:8]}"
    cluster_objects.create_node(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {"kubernetes.io/hostname": name, "team": "ml"},
                "annotations": {"owner.example.com/ticket": "OPS-1"},
            },
            "spec": {"taints": [FOREIGN_TAINT]},
        }
    )
    return name


def read_node(admin: client.ApiClient, name: str) -> dict[str, Any]:
    node = client.CoreV1Api(admin).read_node(name)
    result = admin.sanitize_for_serialization(node)
    assert isinstance(result, dict)
    return result


def labels_of(node: dict[str, Any]) -> dict[str, str]:
    return dict(node["metadata"].get("labels") or {})


def taints_of(node: dict[str, Any]) -> list[dict[str, Any]]:
    return list(node["spec"].get("taints") or [])


def agent_client(api_client: client.ApiClient) -> KubeClient:
    """The agent's own REST client (gputopo.core.kube) with the same server and credentials as an
    official-client ``ApiClient``: what the publisher talks through when the agent runs."""
    configuration = api_client.configuration
    token = (configuration.api_key or {}).get("authorization")
    return KubeClient(
        ClusterConfig(
            server=configuration.host,
            source="test client",
            ca_file=configuration.ssl_ca_cert,
            client_cert_file=configuration.cert_file,
            client_key_file=configuration.key_file,
            token=token,
        )
    )


def publisher(admin: client.ApiClient, name: str, **kwargs: Any) -> Publisher:
    return Publisher(agent_client(admin), name, backoff=fast_backoff(), **kwargs)


# --- ownership -----------------------------------------------------------------------------------


def test_publish_writes_labels_taints_annotations_and_tracks_ownership(
    kube_admin: client.ApiClient, node_name: str
) -> None:
    result = publisher(kube_admin, node_name).publish(dgx_h100())
    assert result.status == "written"
    node = read_node(kube_admin, node_name)
    labels = labels_of(node)
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert labels["gputopo.io/gpu.nvlink-domain-size"] == "8"
    assert labels["gputopo.io/sla"] == "1000"
    annotations = node["metadata"]["annotations"]
    owned = set(annotations[C.owned_labels_annotation].split(","))
    assert owned == {k for k in labels if k.startswith(("gputopo.io/", "nvidia.com/"))}
    assert annotations[C.owned_taints_annotation] == "gputopo.io/sla:PreferNoSchedule"
    assert json.loads(annotations[C.topology_annotation])["v"] == 1


def test_foreign_labels_annotations_and_taints_are_untouched(
    kube_admin: client.ApiClient, node_name: str
) -> None:
    core = client.CoreV1Api(kube_admin)
    core.patch_node(node_name, {"metadata": {"labels": {"nvidia.com/gpu.product": "FROM-GFD"}}})
    publisher(kube_admin, node_name).publish(dgx_h100())
    node = read_node(kube_admin, node_name)
    assert labels_of(node)["team"] == "ml"
    assert labels_of(node)["nvidia.com/gpu.product"] == "FROM-GFD"  # GFD's, not ours
    assert (
        "nvidia.com/gpu.product" not in node["metadata"]["annotations"][C.owned_labels_annotation]
    )
    assert node["metadata"]["annotations"]["owner.example.com/ticket"] == "OPS-1"
    assert taints_of(node)[0] == FOREIGN_TAINT


class TaintInjectingApi:
    """The agent's client, but someone adds a taint between our read and our first write."""

    def __init__(self, admin: client.ApiClient, node_name: str) -> None:
        self.api = agent_client(admin)
        self.core = client.CoreV1Api(admin)
        self.node_name = node_name
        self.injected = False

    def read_node(self, name: str) -> Any:
        return self.api.read_node(name)

    def patch_node(self, name: str, body: Any, **kwargs: Any) -> Any:
        if not self.injected:
            self.injected = True
            node = self.core.read_node(self.node_name)
            taints = [*(node.spec.taints or []), client.V1Taint(key="maint", effect="NoExecute")]
            self.core.patch_node(self.node_name, {"spec": {"taints": taints}})
        return self.api.patch_node(name, body, **kwargs)


def test_taint_added_concurrently_survives_conflict_and_retry(
    kube_admin: client.ApiClient, node_name: str
) -> None:
    api = TaintInjectingApi(kube_admin, node_name)
    pub = Publisher(api, node_name, backoff=fast_backoff())
    result = pub.publish(dgx_h100())
    assert result.status == "written"
    assert pub.counters.conflicts == 1
    keys = [t["key"] for t in taints_of(read_node(kube_admin, node_name))]
    assert keys == ["dedicated", "maint", "gputopo.io/sla"]


# --- idempotence ---------------------------------------------------------------------------------


def test_zero_writes_across_repeated_cycles_and_a_restart(
    kube_admin: client.ApiClient, node_name: str
) -> None:
    first = publisher(kube_admin, node_name)
    assert first.publish(dgx_h100()).status == "written"
    version = read_node(kube_admin, node_name)["metadata"]["resourceVersion"]
    for _ in range(3):
        assert first.publish(dgx_h100()).status == "unchanged"
    restarted = publisher(kube_admin, node_name)  # a new process: no memory of the last run
    assert restarted.publish(dgx_h100()).status == "unchanged"
    assert read_node(kube_admin, node_name)["metadata"]["resourceVersion"] == version
    assert first.counters.writes == 1 and restarted.counters.writes == 0


def test_transient_nvml_failure_keeps_labels(kube_admin: client.ApiClient, node_name: str) -> None:
    pub = publisher(kube_admin, node_name)
    pub.publish(dgx_h100())
    before = read_node(kube_admin, node_name)
    for _ in range(5):
        assert pub.publish(nvml_down_with_gpus()).status == "skipped"
    after = read_node(kube_admin, node_name)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert labels_of(after)["nvidia.com/gpu.count"] == "8"
    assert pub.counters.discovery_failures == 5


def test_discovery_that_raises_publishes_nothing(
    kube_admin: client.ApiClient, node_name: str
) -> None:
    pub = publisher(kube_admin, node_name)
    pub.publish(dgx_h100())
    version = read_node(kube_admin, node_name)["metadata"]["resourceVersion"]

    def broken() -> Any:
        raise RuntimeError("NVML_ERROR_UNKNOWN")

    assert run_cycle(broken, pub).node.status == "skipped"
    assert read_node(kube_admin, node_name)["metadata"]["resourceVersion"] == version


def test_removal_only_after_hysteresis(kube_admin: client.ApiClient, node_name: str) -> None:
    pub = publisher(kube_admin, node_name, options=PublishOptions(removal_after=3))
    broken = replace(dgx_h100(), pci_only_gpus=(PciOnlyGpu("0000:99:00.0", reason="no driver"),))
    pub.publish(broken)
    node = read_node(kube_admin, node_name)
    assert "gputopo.io/gpu-health" in [t["key"] for t in taints_of(node)]

    healthy = dgx_h100()
    for cycle in (1, 2):
        pub.publish(healthy)
        node = read_node(kube_admin, node_name)
        assert "gputopo.io/gpu-health" in [t["key"] for t in taints_of(node)], cycle
        pending = json.loads(node["metadata"]["annotations"][C.pending_removal_annotation])
        assert pending == {"taint:gputopo.io/gpu-health:NoSchedule": cycle}
    pub.publish(healthy)
    node = read_node(kube_admin, node_name)
    assert [t["key"] for t in taints_of(node)] == ["dedicated", "gputopo.io/sla"]
    assert C.pending_removal_annotation not in node["metadata"]["annotations"]


def test_removed_label_survives_until_hysteresis(
    kube_admin: client.ApiClient, node_name: str
) -> None:
    pub = publisher(kube_admin, node_name, options=PublishOptions(removal_after=2))
    pub.publish(gb200_fabric())
    assert "nvidia.com/gpu.clique" in labels_of(read_node(kube_admin, node_name))
    unregistered = gb200_fabric()
    unregistered = replace(
        unregistered, gpus=tuple(replace(gpu, fabric=None) for gpu in unregistered.gpus)
    )
    pub.publish(unregistered)
    node = read_node(kube_admin, node_name)
    assert "nvidia.com/gpu.clique" in labels_of(node)  # one absence is not enough
    assert "nvidia.com/gpu.clique" in node["metadata"]["annotations"][C.owned_labels_annotation]
    pub.publish(unregistered)
    node = read_node(kube_admin, node_name)
    assert "nvidia.com/gpu.clique" not in labels_of(node)
    assert "nvidia.com/gpu.clique" not in node["metadata"]["annotations"][C.owned_labels_annotation]


def test_dry_run_writes_nothing(kube_admin: client.ApiClient, node_name: str) -> None:
    version = read_node(kube_admin, node_name)["metadata"]["resourceVersion"]
    result = publisher(kube_admin, node_name).publish(dgx_h100(), dry_run=True)
    assert result.status == "dry-run"
    assert any(c.describe() == "+ label gputopo.io/sla=1000" for c in result.changes)
    assert read_node(kube_admin, node_name)["metadata"]["resourceVersion"] == version


def test_prune_removes_only_owned_keys(kube_admin: client.ApiClient, node_name: str) -> None:
    original = read_node(kube_admin, node_name)
    pub = publisher(kube_admin, node_name)
    pub.publish(dgx_h100())
    assert pub.prune().status == "written"
    pruned = read_node(kube_admin, node_name)
    assert labels_of(pruned) == labels_of(original)
    assert pruned["metadata"]["annotations"] == original["metadata"]["annotations"]
    assert taints_of(pruned) == taints_of(original)
    assert pub.prune().status == "unchanged"


# --- API errors ----------------------------------------------------------------------------------


class FlakyProxy:
    """Plain-HTTP proxy to the real API server that answers 503 to the first ``failures``."""

    def __init__(self, control_plane: ControlPlane, failures: int) -> None:
        assert control_plane.pki is not None
        self.upstream = control_plane.url
        self.context = ssl.create_default_context(cafile=str(control_plane.pki.ca_file))
        self.failures = failures
        self.requests = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                del format, args

            def _handle(self) -> None:
                proxy.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy.requests <= proxy.failures:
                    payload = b'{"kind":"Status","message":"injected outage","code":503}'
                    self.send_response(503)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                request = urllib.request.Request(
                    proxy.upstream + self.path, data=body, method=self.command
                )
                for header in ("Authorization", "Content-Type", "Accept"):
                    if self.headers.get(header):
                        request.add_header(header, self.headers[header])
                try:
                    with urllib.request.urlopen(request, context=proxy.context) as response:
                        status, data, ctype = response.status, response.read(), response.headers
                except urllib.error.HTTPError as error:
                    status, data, ctype = error.code, error.read(), error.headers
                self.send_response(status)
                self.send_header("Content-Type", ctype.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PATCH = do_PUT = do_POST = do_DELETE = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def client(self, token: str) -> client.ApiClient:
        configuration = client.Configuration(host=self.url)
        configuration.api_key = {"authorization": token}
        configuration.api_key_prefix = {"authorization": "Bearer"}
        return client.ApiClient(configuration)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def flaky_proxy(control_plane: ControlPlane) -> Iterator[Callable[[int], FlakyProxy]]:
    proxies: list[FlakyProxy] = []

    def make(failures: int) -> FlakyProxy:
        proxies.append(FlakyProxy(control_plane, failures))
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.close()


def test_api_server_errors_are_retried(
    control_plane: ControlPlane,
    kube_admin: client.ApiClient,
    node_name: str,
    flaky_proxy: Callable[[int], FlakyProxy],
) -> None:
    proxy = flaky_proxy(3)
    api = agent_client(proxy.client(control_plane.admin_token))
    pub = Publisher(api, node_name, backoff=fast_backoff())
    assert pub.publish(dgx_h100()).status == "written"
    assert pub.counters.retries == 3
    assert labels_of(read_node(kube_admin, node_name))["gputopo.io/sla"] == "1000"


def test_api_server_outage_is_reported_not_raised(
    control_plane: ControlPlane, node_name: str, flaky_proxy: Callable[[int], FlakyProxy]
) -> None:
    proxy = flaky_proxy(10**6)
    api = agent_client(proxy.client(control_plane.admin_token))
    result = Publisher(api, node_name, backoff=fast_backoff(4)).publish(dgx_h100())
    assert result.status == "error"
    assert "HTTP 503" in result.message and "gave up after 4 attempts" in result.message


# --- NodeResourceTopology ------------------------------------------------------------------------


def load_manifests(path: Path) -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for file in sorted(path.glob("*.yaml")):
        if file.name == "kustomization.yaml":
            continue
        documents.extend(d for d in yaml.safe_load_all(file.read_text()) if d)
    return documents


def test_nrt_applied_with_zones_costs_and_gpus(
    kube_admin: client.ApiClient, gputopo_crds: list[str], node_name: str
) -> None:
    custom = client.CustomObjectsApi(kube_admin)
    nrt = NrtPublisher(agent_client(kube_admin), node_name, backoff=fast_backoff())
    try:
        result = nrt.publish(dgx_h100(), {0: {"nvidia.com/gpu": 1}})
        assert result.status == "written", result.message
        stored = custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, node_name)
        zones = {z["name"]: z for z in stored["zones"]}
        assert set(zones) == {"node-0", "node-1"}
        assert zones["node-0"]["type"] == "Node"
        assert zones["node-0"]["costs"] == [
            {"name": "node-0", "value": 10},
            {"name": "node-1", "value": 21},
        ]
        gpu = {r["name"]: r for r in zones["node-0"]["resources"]}["nvidia.com/gpu"]
        assert (gpu["capacity"], gpu["allocatable"], gpu["available"]) == (4, 4, 1)
        version = stored["metadata"]["resourceVersion"]
        assert nrt.publish(dgx_h100(), {0: {"nvidia.com/gpu": 1}}).status == "unchanged"
        again = custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, node_name)
        assert again["metadata"]["resourceVersion"] == version
        assert nrt.prune().status == "written"
    finally:
        try:
            custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, node_name)
        except client.ApiException as error:
            if error.status != 404:
                raise


# --- least privilege: RBAC + admission, acting as the agent on node A ----------------------------


AGENT_NAMESPACE = "gputopo-system"


@pytest.fixture(scope="module")
def agent_rbac_and_policy(control_plane: ControlPlane) -> Iterator[None]:
    """The shipped ServiceAccount, RBAC and admission policies, once for this module.

    Namespaces never finish terminating here (no controller-manager), so the agent's namespace
    is created once and left to the session's throwaway etcd.
    """
    tracker = ClusterObjects(control_plane.admin)
    try:
        core = client.CoreV1Api(control_plane.admin)
        try:
            core.read_namespace(AGENT_NAMESPACE)
        except client.ApiException:
            control_plane.create_namespace(AGENT_NAMESPACE)
        for document in load_manifests(REPO / "daemonset" / "rbac"):
            if document["kind"] == "ServiceAccount":
                control_plane.create_service_account(AGENT_NAMESPACE, document["metadata"]["name"])
            else:
                tracker.create(document["kind"], document)
        for document in load_manifests(REPO / "daemonset" / "admission"):
            tracker.create(document["kind"], document)
        yield
    finally:
        problems = tracker.cleanup()
        assert not problems, problems


@pytest.fixture
def agent_on_node_a(
    agent_rbac_and_policy: None,
    control_plane: ControlPlane,
    cluster_objects: ClusterObjects,
    kube_admin: client.ApiClient,
) -> Iterator[tuple[client.ApiClient, str, str]]:
    """(agent client whose token is bound to a Pod on node A, node A, node B)."""
    node_a, node_b = (f"node-{side}-{uuid.uuid4().hex[:6]}" for side in "ab")
    for name in (node_a, node_b):
        cluster_objects.create_node(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "labels": {"team": "ml"}},
                "spec": {"taints": [FOREIGN_TAINT]},
            }
        )
    with agent_bound_to(control_plane, kube_admin, node_a) as agent:
        yield agent, node_a, node_b


@contextlib.contextmanager
def agent_bound_to(
    control_plane: ControlPlane, kube_admin: client.ApiClient, node: str
) -> Iterator[client.ApiClient]:
    """An API client as the agent's ServiceAccount, its token bound to a Pod on ``node`` (as the
    DaemonSet's would be, so the admission policy's node-name claim applies); the Pod is deleted
    on exit."""
    core = client.CoreV1Api(kube_admin)
    pod = core.create_namespaced_pod(
        AGENT_NAMESPACE,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"gputopo-agent-{node}"},
            "spec": {
                "nodeName": node,
                "serviceAccountName": "gputopo-agent",
                "containers": [{"name": "agent", "image": "gputopo:test"}],
            },
        },
    )
    try:
        yield control_plane.client_for_service_account(
            AGENT_NAMESPACE, "gputopo-agent", bound_pod=pod
        )
    finally:
        core.delete_namespaced_pod(pod.metadata.name, AGENT_NAMESPACE, grace_period_seconds=0)


def eventually_denied(action: Callable[[], Any], undo: Callable[[], Any]) -> client.ApiException:
    """Admission policies take effect a moment after creation: retry until the denial shows."""
    deadline = time.monotonic() + 20
    while True:
        try:
            action()
        except client.ApiException as error:
            if error.status in (403, 422):
                return error
            raise
        undo()
        if time.monotonic() > deadline:
            pytest.fail("the write was never denied")
        time.sleep(0.3)


def test_agent_can_publish_to_its_own_node(
    agent_on_node_a: tuple[client.ApiClient, str, str], kube_admin: client.ApiClient
) -> None:
    agent, node_a, _ = agent_on_node_a
    # prove the policy is active before trusting a success: the agent is denied on node B
    core = client.CoreV1Api(agent)
    admin_core = client.CoreV1Api(kube_admin)
    eventually_denied(
        lambda: core.patch_node(
            agent_on_node_a[2],
            {"metadata": {"labels": {"gputopo.io/probe": "x"}}},
            _content_type="application/merge-patch+json",
        ),
        lambda: admin_core.patch_node(
            agent_on_node_a[2],
            {"metadata": {"labels": {"gputopo.io/probe": None}}},
            _content_type="application/merge-patch+json",
        ),
    )
    result = Publisher(agent_client(agent), node_a, backoff=fast_backoff()).publish(dgx_h100())
    assert result.status == "written", result.message
    node = read_node(kube_admin, node_a)
    admission = client.AdmissionregistrationV1Api(kube_admin)
    for policy in ("gputopo-agent-node-writes", "gputopo-agent-nrt-writes"):
        status = admission.read_validating_admission_policy(policy).status
        checking = status.type_checking if status is not None else None
        assert checking is None or not checking.expression_warnings, checking
    assert labels_of(node)["gputopo.io/sla"] == "1000"
    assert labels_of(node)["team"] == "ml"
    assert taints_of(node)[0] == FOREIGN_TAINT


def test_agent_cannot_touch_another_node(
    agent_on_node_a: tuple[client.ApiClient, str, str], kube_admin: client.ApiClient
) -> None:
    agent, _, node_b = agent_on_node_a
    core = client.CoreV1Api(agent)
    admin_core = client.CoreV1Api(kube_admin)
    error = eventually_denied(
        lambda: core.patch_node(
            node_b,
            {"metadata": {"labels": {"gputopo.io/sla": "1000"}}},
            _content_type="application/merge-patch+json",
        ),
        lambda: admin_core.patch_node(
            node_b,
            {"metadata": {"labels": {"gputopo.io/sla": None}}},
            _content_type="application/merge-patch+json",
        ),
    )
    assert "only change the Node its token is bound to" in str(error.body)
    assert "gputopo.io/sla" not in labels_of(read_node(kube_admin, node_b))
    result = Publisher(agent_client(agent), node_b, backoff=fast_backoff()).publish(dgx_h100())
    assert result.status == "error" and "HTTP 403" in result.message


def test_agent_cannot_change_labels_taints_or_fields_it_does_not_own(
    agent_on_node_a: tuple[client.ApiClient, str, str], kube_admin: client.ApiClient
) -> None:
    agent, node_a, _ = agent_on_node_a
    core = client.CoreV1Api(agent)
    admin_core = client.CoreV1Api(kube_admin)

    def restore() -> None:
        admin_core.patch_node(
            node_a,
            {"metadata": {"labels": {"team": "ml"}}, "spec": {"taints": [FOREIGN_TAINT]}},
            _content_type="application/merge-patch+json",
        )

    error = eventually_denied(
        lambda: core.patch_node(
            node_a,
            {"metadata": {"labels": {"team": "web"}}},
            _content_type="application/merge-patch+json",
        ),
        restore,
    )
    assert "only change labels under gputopo.io/ and nvidia.com/" in str(error.body)
    for patch in (
        {"metadata": {"labels": {"team": None}}},
        {"metadata": {"annotations": {"owner.example.com/x": "y"}}},
        {"spec": {"taints": []}},
        {"spec": {"unschedulable": True}},
    ):
        with pytest.raises(client.ApiException) as denied:
            core.patch_node(node_a, patch, _content_type="application/merge-patch+json")
        assert denied.value.status == 403, patch
    with pytest.raises(client.ApiException) as forbidden:
        core.delete_node(node_a)
    assert forbidden.value.status == 403  # RBAC grants no delete
    node = read_node(kube_admin, node_a)
    assert labels_of(node)["team"] == "ml"
    assert taints_of(node) == [FOREIGN_TAINT]


# --- the command line ----------------------------------------------------------------------------


def agent_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from agent.cli import main; raise SystemExit(main())", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_run_once_cli_publishes_then_writes_nothing(
    control_plane: ControlPlane, kube_admin: client.ApiClient, node_name: str
) -> None:
    kubeconfig = control_plane.kubeconfig_for_token(control_plane.admin_token, "agent-cli")
    args = ("run", "--once", "--mock", "dgx-h100", "--kubeconfig", str(kubeconfig))
    dry = agent_cli(*args, "--dry-run", env={"NODE_NAME": node_name})
    assert dry.returncode == 0, dry.stderr
    assert "+ label gputopo.io/gpu.interconnect=nvswitch" in dry.stdout
    assert f"Node {node_name}: dry-run" in dry.stdout
    assert "gputopo.io/sla" not in labels_of(read_node(kube_admin, node_name))

    first = agent_cli(*args, env={"NODE_NAME": node_name})
    assert first.returncode == 0, first.stderr
    assert f"Node {node_name}: written" in first.stdout
    version = read_node(kube_admin, node_name)["metadata"]["resourceVersion"]
    second = agent_cli(*args, "--node-name", node_name)
    assert second.returncode == 0, second.stderr
    assert f"Node {node_name}: unchanged" in second.stdout
    assert read_node(kube_admin, node_name)["metadata"]["resourceVersion"] == version

    pruned = agent_cli(
        *args[:1], "--once", "--prune", "--kubeconfig", str(kubeconfig), "--node-name", node_name
    )
    assert pruned.returncode == 0, pruned.stderr
    assert "gputopo.io/sla" not in labels_of(read_node(kube_admin, node_name))


def test_agent_writes_only_its_own_node_resource_topology(
    agent_on_node_a: tuple[client.ApiClient, str, str],
    gputopo_crds: list[str],
    kube_admin: client.ApiClient,
) -> None:
    agent, node_a, node_b = agent_on_node_a
    custom = agent_client(agent)
    admin_custom = client.CustomObjectsApi(kube_admin)

    def delete_b() -> None:
        admin_custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, node_b)

    def apply_b() -> None:
        result = NrtPublisher(custom, node_b, backoff=fast_backoff()).publish(dgx_h100())
        if result.status == "error":
            raise client.ApiException(status=403 if "HTTP 403" in result.message else 500)

    eventually_denied(apply_b, delete_b)
    own = NrtPublisher(custom, node_a, backoff=fast_backoff())
    try:
        assert own.publish(dgx_h100()).status == "written"
        assert own.prune().status == "written"
    finally:
        with contextlib.suppress(client.ApiException):
            admin_custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, node_a)
