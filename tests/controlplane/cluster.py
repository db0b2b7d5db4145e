"""etcd + kube-apiserver (and, on demand, kube-scheduler, kube-controller-manager and kwok) on
loopback for one session.

The apiserver runs with what a real cluster's has: TLS with its own CA, a static token file for
an admin in system:masters, Node+RBAC authorization, service-account issuer and signing keys
(so the TokenRequest API mints real, pod-bound tokens), NodeRestriction admission, and the
KEP-5471 gate `TaintTolerationComparisonOperators` on, and Kubernetes' own gang API
(`GenericWorkload`, `scheduling.k8s.io/v1beta1`) served. kube-controller-manager runs only the
controllers a test names (`start_controller_manager`): no namespace/garbage-collection/
serviceaccount controllers, so `create_namespace` creates the `default` ServiceAccount itself
and `TaintNodesByCondition` admission is off (no node lifecycle controller would ever lift its
not-ready taint).

DRA needs no extra gate or runtime-config in v1.37.2 (pkg/features/kube_features.go there):
DynamicResourceAllocation, DRADeviceTaints, DRADeviceTaintRules, DRAExtendedResource and
DRAPrioritizedList are GA and on, DRAPartitionableDevices and DRAConsumableCapacity beta and on
by default, and `resource.k8s.io/v1` (devicetaintrules included) is a default-enabled version.
The beta/alpha versions of the group stay off, as in a default cluster.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import ssl
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client

from hack.testenv import Tools
from hack.testenv.tools import ETCD, KUBE_APISERVER, KUBE_CONTROLLER_MANAGER, KUBE_SCHEDULER, KWOK
from tests.controlplane.certs import ClusterPki, write_cluster_pki
from tests.controlplane.kubeconfig import write_kubeconfig
from tests.controlplane.processes import ComponentFailedError, ManagedProcess, free_port

# KEP-5471 Gt/Lt tolerations (alpha); Kubernetes' own gang API (Workload/PodGroup, beta, off by
# default, served with --runtime-config below) and its PodGroup topology constraint (alpha: the
# apiserver drops spec.schedulingConstraints without it).
FEATURE_GATES = (
    "TaintTolerationComparisonOperators=true,GenericWorkload=true,"
    "TopologyAwareWorkloadScheduling=true"
)
RUNTIME_CONFIG = "scheduling.k8s.io/v1beta1=true"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN_USER = "gputopo-test-admin"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_NODE_VALUE = "fake"
START_TIMEOUT_S = 60.0
# kube-controller-manager's controllers for DRA (cmd/kube-controller-manager/names): the
# ResourceClaim controller makes claims from a Pod's claim templates and clears reservedFor; the
# device-taint-eviction controller evicts Pods whose allocated devices carry a NoExecute taint.
RESOURCE_CLAIM_CONTROLLER = "resourceclaim-controller"
DEVICE_TAINT_EVICTION_CONTROLLER = "device-taint-eviction-controller"
# Evicts Pods from Nodes with NoExecute taints they do not tolerate (KEP-5471 `Gt`/`Lt` included).
TAINT_EVICTION_CONTROLLER = "taint-eviction-controller"
DRA_CONTROLLERS = (RESOURCE_CLAIM_CONTROLLER, DEVICE_TAINT_EVICTION_CONTROLLER)


@dataclass(frozen=True)
class StartupTimes:
    """Seconds from spawning each component to it answering ready."""

    etcd: float
    kube_apiserver: float
    total: float


class ControlPlane:
    """A running etcd + kube-apiserver, and factories for clients acting as various identities."""

    def __init__(self, tools: Tools, workdir: Path) -> None:
        self.tools = tools
        self.workdir = workdir
        self.processes: list[ManagedProcess] = []
        self.admin_token = secrets.token_urlsafe(32)
        self.pki: ClusterPki | None = None
        self.url = ""
        self.admin_kubeconfig = workdir / "admin.kubeconfig"
        self.startup: StartupTimes | None = None
        self.scheduler: ManagedProcess | None = None
        self.controller_manager: ManagedProcess | None = None
        self.controller_manager_controllers: tuple[str, ...] = ()
        self.kwok: ManagedProcess | None = None
        self._admin: client.ApiClient | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> ControlPlane:
        """Start etcd, then kube-apiserver; retried if another process took a chosen port."""
        for attempt in range(3):
            try:
                return self._start_once()
            except ComponentFailedError as error:
                if "address already in use" not in str(error) or attempt == 2:
                    raise
                self.stop()
                self.processes.clear()
        raise AssertionError("unreachable")

    def _start_once(self) -> ControlPlane:
        started = time.monotonic()
        etcd_binary = self.tools.require(ETCD)
        apiserver_binary = self.tools.require(KUBE_APISERVER)
        self.pki = write_cluster_pki(self.workdir / "pki")
        etcd_port, etcd_peer_port = free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        etcd = self._spawn(
            "etcd",
            [
                str(etcd_binary),
                "--name=gputopo-test",
                f"--data-dir={self.workdir / f'etcd-{etcd_port}'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}",
                f"--initial-cluster=gputopo-test=http://127.0.0.1:{etcd_peer_port}",
                "--unsafe-no-fsync",  # a throwaway store; fsync only slows the tests
                "--log-level=warn",
            ],
        )
        etcd_ready = etcd.wait_until(
            lambda: _http_get(f"{etcd_url}/health").get("health") == "true",
            START_TIMEOUT_S,
            "healthy",
        )
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(f'{self.admin_token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
        tokens.chmod(0o600)
        port = free_port()
        self.url = f"https://127.0.0.1:{port}"
        pki = self.pki
        apiserver = self._spawn(
            "kube-apiserver",
            [
                str(apiserver_binary),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={pki.serving_cert_file}",
                f"--tls-private-key-file={pki.serving_key_file}",
                f"--client-ca-file={pki.ca_file}",
                # Front-proxy (aggregation) identity as kubeadm sets it; without it the apiserver
                # logs a missing requestheader CA bundle every few seconds.
                f"--requestheader-client-ca-file={pki.ca_file}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--token-auth-file={tokens}",
                "--authorization-mode=Node,RBAC",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki.service_account_public_key_file}",
                f"--service-account-signing-key-file={pki.service_account_key_file}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--enable-admission-plugins=NodeRestriction",
                "--disable-admission-plugins=TaintNodesByCondition",
                f"--feature-gates={FEATURE_GATES}",
                f"--runtime-config={RUNTIME_CONFIG}",
                # The `kubernetes` Service endpoints cannot point at loopback; nothing needs them.
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                "--profiling=false",
            ],
        )
        ca = ssl.create_default_context(cafile=str(pki.ca_file))
        apiserver.wait_until(
            lambda: _https_text(f"{self.url}/readyz", self.admin_token, ca) == "ok",
            START_TIMEOUT_S,
            "ready (/readyz)",
        )
        self.startup = StartupTimes(
            etcd=round(etcd_ready, 2),
            kube_apiserver=round(time.monotonic() - apiserver.started_at, 2),
            total=round(time.monotonic() - started, 2),
        )
        write_kubeconfig(self.admin_kubeconfig, self.url, pki.ca_file, token=self.admin_token)
        self.create_service_account("default", "default")
        return self

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.close()  # type: ignore[no-untyped-call]
            self._admin = None
        for process in reversed(self.processes):
            process.stop()

    def _spawn(self, name: str, argv: Sequence[str]) -> ManagedProcess:
        process = ManagedProcess(name, argv, self.workdir / "logs" / f"{name}.log", self.workdir)
        self.processes.append(process)
        return process

    # ---- clients ---------------------------------------------------------------------------

    def _configuration(self) -> client.Configuration:
        assert self.pki is not None, "control plane not started"
        configuration = client.Configuration(host=self.url)
        configuration.ssl_ca_cert = str(self.pki.ca_file)
        return configuration

    def client_for_token(self, token: str) -> client.ApiClient:
        """An ApiClient authenticating with a bearer token (admin, ServiceAccount, ...)."""
        configuration = self._configuration()
        configuration.api_key = {"authorization": token}
        configuration.api_key_prefix = {"authorization": "Bearer"}
        return client.ApiClient(configuration)

    @property
    def admin(self) -> client.ApiClient:
        """The shared admin (system:masters) client; do not close it."""
        if self._admin is None:
            self._admin = self.client_for_token(self.admin_token)
        return self._admin

    def client_for_user(self, user: str, groups: Sequence[str] = ()) -> client.ApiClient:
        """An ApiClient with a client certificate (CN=user, O=groups), e.g. system:node:<n>."""
        assert self.pki is not None, "control plane not started"
        cert_pem, key_pem = self.pki.ca.issue(user, tuple(groups))
        directory = self.workdir / "users" / uuid.uuid4().hex
        directory.mkdir(parents=True)
        (directory / "tls.crt").write_bytes(cert_pem)
        (directory / "tls.key").write_bytes(key_pem)
        configuration = self._configuration()
        configuration.cert_file = str(directory / "tls.crt")
        configuration.key_file = str(directory / "tls.key")
        return client.ApiClient(configuration)

    def create_service_account(self, namespace: str, name: str) -> client.V1ServiceAccount:
        core = client.CoreV1Api(self.admin)
        body = client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
        try:
            return core.create_namespaced_service_account(namespace, body)
        except client.ApiException as error:
            if error.status != 409:
                raise
            return core.read_namespaced_service_account(name, namespace)

    def service_account_token(
        self,
        namespace: str,
        service_account: str,
        *,
        bound_pod: client.V1Pod | None = None,
        audiences: Sequence[str] = (),
        expiration_seconds: int = 3600,
    ) -> str:
        """A token minted with the TokenRequest API, optionally bound to a Pod.

        Bound to a Pod scheduled on a Node, the apiserver adds the node's name and uid to the
        token (ServiceAccountTokenPodNodeInfo, GA): the identity a DaemonSet pod has on that
        node, visible to admission as user.extra["authentication.kubernetes.io/node-name"].
        """
        bound = None
        if bound_pod is not None:
            if bound_pod.metadata is None:
                raise ValueError("service_account_token: bound_pod has no metadata (name, uid)")
            bound = client.V1BoundObjectReference(
                api_version="v1",
                kind="Pod",
                name=bound_pod.metadata.name,
                uid=bound_pod.metadata.uid,
            )
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(
                audiences=list(audiences),
                expiration_seconds=expiration_seconds,
                bound_object_ref=bound,
            )
        )
        response = client.CoreV1Api(self.admin).create_namespaced_service_account_token(
            service_account, namespace, request
        )
        if response.status is None or not response.status.token:
            raise RuntimeError(f"TokenRequest for {namespace}/{service_account} returned no token")
        return str(response.status.token)

    def client_for_service_account(
        self, namespace: str, service_account: str, *, bound_pod: client.V1Pod | None = None
    ) -> client.ApiClient:
        token = self.service_account_token(namespace, service_account, bound_pod=bound_pod)
        return self.client_for_token(token)

    def kubeconfig_for_token(self, token: str, name: str) -> Path:
        """A kubeconfig file for a subprocess (e.g. the agent's CLI) acting with `token`."""
        assert self.pki is not None, "control plane not started"
        return write_kubeconfig(
            self.workdir / "kubeconfigs" / f"{name}.kubeconfig",
            self.url,
            self.pki.ca_file,
            token=token,
            user=name,
        )

    def create_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> str:
        """A namespace with its `default` ServiceAccount (no controller-manager creates it)."""
        core = client.CoreV1Api(self.admin)
        core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=dict(labels or {})))
        )
        self.create_service_account(name, "default")
        return name

    def delete_namespace(self, name: str) -> None:
        """Force-delete its Pods (no kubelet confirms), then the namespace itself."""
        core = client.CoreV1Api(self.admin)
        with contextlib.suppress(client.ApiException):
            core.delete_collection_namespaced_pod(name, grace_period_seconds=0)
        with contextlib.suppress(client.ApiException):
            core.delete_namespace(name)

    def version(self) -> dict[str, str]:
        assert self.pki is not None, "control plane not started"
        ca = ssl.create_default_context(cafile=str(self.pki.ca_file))
        parsed = json.loads(_https_text(f"{self.url}/version", self.admin_token, ca))
        return {str(key): str(value) for key, value in parsed.items()}

    # ---- on-demand components --------------------------------------------------------------

    def start_scheduler(self, extra_args: Sequence[str] = ()) -> ManagedProcess:
        """kube-scheduler with its default profile, admin kubeconfig, leader election off."""
        if self.scheduler is not None and self.scheduler.alive():
            return self.scheduler
        binary = self.tools.require(KUBE_SCHEDULER)
        port = free_port()
        kubeconfig = str(self.admin_kubeconfig)
        process = self._spawn(
            "kube-scheduler",
            [
                str(binary),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / 'scheduler-certs'}",
                f"--feature-gates={FEATURE_GATES}",
                *extra_args,
            ],
        )
        _wait_serving(process, port, "/readyz")
        self.scheduler = process
        return process

    def start_scheduler_with_config(
        self, name: str, configuration: Mapping[str, object]
    ) -> ManagedProcess:
        """A separate kube-scheduler run from a KubeSchedulerConfiguration (the caller stops it).

        ``configuration`` gets the admin kubeconfig and leader election off filled in; it is
        written as JSON (valid YAML) to ``<workdir>/<name>.config.yaml``.
        """
        binary = self.tools.require(KUBE_SCHEDULER)
        port = free_port()
        config = {
            **configuration,
            "clientConnection": {"kubeconfig": str(self.admin_kubeconfig)},
            "leaderElection": {"leaderElect": False},
        }
        config_file = self.workdir / f"{name}.config.yaml"
        config_file.write_text(json.dumps(config, indent=2))
        kubeconfig = str(self.admin_kubeconfig)
        process = self._spawn(
            name,
            [
                str(binary),
                f"--config={config_file}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / f'{name}-certs'}",
                f"--feature-gates={FEATURE_GATES}",
            ],
        )
        _wait_serving(process, port, "/readyz")
        return process

    def start_controller_manager(
        self, controllers: Sequence[str] = DRA_CONTROLLERS, extra_args: Sequence[str] = ()
    ) -> ManagedProcess:
        """kube-controller-manager running exactly `controllers` (admin kubeconfig, no election).

        One runs at a time: asked for another set of controllers, the running one is stopped
        and a new one started with that set (a controller a test did not ask for, such as
        taint eviction, must not act on other tests' objects).
        """
        wanted = tuple(controllers)
        if not wanted:
            raise ValueError("start_controller_manager: controllers is empty")
        running = self.controller_manager
        if running is not None and running.alive():
            if wanted == self.controller_manager_controllers:
                return running
            running.stop()
        binary = self.tools.require(KUBE_CONTROLLER_MANAGER)
        port = free_port()
        kubeconfig = str(self.admin_kubeconfig)
        process = self._spawn(
            "kube-controller-manager",
            [
                str(binary),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--controllers={','.join(wanted)}",
                "--leader-elect=false",
                "--use-service-account-credentials=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / 'controller-manager-certs'}",
                f"--feature-gates={FEATURE_GATES}",
                *extra_args,
            ],
        )
        _wait_serving(process, port, "/healthz")
        self.controller_manager = process
        self.controller_manager_controllers = wanted
        return process

    def start_kwok(self) -> ManagedProcess:
        """kwok managing Nodes annotated kwok.x-k8s.io/node=fake, with the default fast stages."""
        if self.kwok is not None and self.kwok.alive():
            return self.kwok
        binary = self.tools.require(KWOK)
        stages = self.tools.kwok_stages()
        port = free_port()
        process = self._spawn(
            "kwok",
            [
                str(binary),
                f"--kubeconfig={self.admin_kubeconfig}",
                f"--config={stages}",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}={KWOK_NODE_VALUE}",
                f"--server-address=127.0.0.1:{port}",
                "--node-ip=127.0.0.1",
            ],
        )
        process.wait_until(
            lambda: http_text(f"http://127.0.0.1:{port}/healthz") == "ok",
            START_TIMEOUT_S,
            "ready (/healthz)",
        )
        self.kwok = process
        return process


def kwok_node(
    name: str,
    *,
    labels: Mapping[str, str] | None = None,
    taints: Sequence[client.V1Taint] = (),
    capacity: Mapping[str, str] | None = None,
) -> client.V1Node:
    """A Node body kwok will manage (it becomes Ready, and bound Pods become Running)."""
    resources = {"cpu": "64", "memory": "512Gi", "pods": "110", **(capacity or {})}
    return client.V1Node(
        metadata=client.V1ObjectMeta(
            name=name,
            annotations={KWOK_NODE_ANNOTATION: KWOK_NODE_VALUE},
            labels={"kubernetes.io/hostname": name, "type": "kwok", **(labels or {})},
        ),
        spec=client.V1NodeSpec(taints=list(taints) or None),
        status=client.V1NodeStatus(capacity=resources, allocatable=resources),
    )


def _wait_serving(process: ManagedProcess, port: int, path: str) -> None:
    """Wait until a component's own self-signed HTTPS endpoint (``/readyz``, ``/healthz``)
    answers ok on loopback."""
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    what = "healthy" if path == "/healthz" else "ready"
    process.wait_until(
        lambda: _https_text(f"https://127.0.0.1:{port}{path}", None, insecure) == "ok",
        START_TIMEOUT_S,
        f"{what} ({path})",
    )


def _http_get(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=2) as response:
        parsed = json.loads(response.read())
    return parsed if isinstance(parsed, dict) else {}


def http_text(url: str) -> str:
    """The body of a plain-HTTP loopback endpoint (kwok's /healthz, Kueue's /readyz)."""
    with urllib.request.urlopen(url, timeout=2) as response:
        return str(response.read().decode().strip())


def _https_text(url: str, token: str | None, context: ssl.SSLContext) -> str:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=2, context=context) as response:
        return str(response.read().decode().strip())


@contextlib.contextmanager
def running_control_plane(tools: Tools, workdir: Path) -> Iterator[ControlPlane]:
    """Start etcd + kube-apiserver; stop (and reap) them however the block ends."""
    plane = ControlPlane(tools, workdir)
    try:
        yield plane.start()
    finally:
        plane.stop()


__all__ = [
    "ADMIN_USER",
    "DEVICE_TAINT_EVICTION_CONTROLLER",
    "DRA_CONTROLLERS",
    "FEATURE_GATES",
    "KWOK_NODE_ANNOTATION",
    "RESOURCE_CLAIM_CONTROLLER",
    "TAINT_EVICTION_CONTROLLER",
    "ComponentFailedError",
    "ControlPlane",
    "StartupTimes",
    "kwok_node",
    "running_control_plane",
]
