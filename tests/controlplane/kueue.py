"""Kueue's controller manager against the test control plane, as a real install runs it.

The binary and its CRDs come from `hack/tools/kueue` (built by `make tools`). Kueue runs on
loopback with the admin kubeconfig: its CRDs installed from the pinned module, its namespace, a
serving certificate for its webhook server from the test CA (internal cert management off, as
with cert-manager), leader election off, and the `batch/job` integration. Its webhooks are not
registered with the API server: the tests create Jobs suspended, as Kueue's Job webhook would
make them, and topology-aware admission injects its scheduling gate through the Job's pod
template (Kueue's reconciler), not through a webhook.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from hack.testenv.tools import KUEUE, assets_dir
from tests.controlplane.cluster import ControlPlane, http_text
from tests.controlplane.processes import ManagedProcess, free_port

KUEUE_NAMESPACE = "kueue-system"
KUEUE_GROUP = "kueue.x-k8s.io"
KUEUE_VERSION = "v1beta2"
QUEUE_NAME_LABEL = "kueue.x-k8s.io/queue-name"
REQUIRED_TOPOLOGY = "kueue.x-k8s.io/podset-required-topology"
_CRD_FOLDER = "config/components/crd/bases"
_START_TIMEOUT_S = 90.0
METRICS_CERT_DIR = Path("/etc/kueue/metrics/certs")


def install_kueue_crds(plane: ControlPlane) -> list[str]:
    """Create Kueue's CRDs (idempotent) and wait until each is established."""
    binary = plane.tools.require(KUEUE.name)
    folder = assets_dir(binary, KUEUE) / _CRD_FOLDER
    extensions = client.ApiextensionsV1Api(plane.admin)
    names: list[str] = []
    for path in sorted(folder.glob("kueue.x-k8s.io_*.yaml")):
        crd = yaml.safe_load(path.read_text(encoding="utf-8"))
        names.append(crd["metadata"]["name"])
        try:
            extensions.create_custom_resource_definition(crd)
        except client.ApiException as error:
            if error.status != 409:
                raise
    deadline = time.monotonic() + 60
    for name in names:
        while True:
            crd = extensions.read_custom_resource_definition(name)
            conditions = {c.type: c.status for c in (crd.status.conditions or [])}
            if conditions.get("Established") == "True":
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"Kueue CRD {name} not established in 60 s")
            time.sleep(0.2)
    return names


def start_kueue(
    plane: ControlPlane, workdir: Path, feature_gates: Sequence[str] = ()
) -> ManagedProcess:
    """Kueue's controller manager, ready (its /readyz answers ok); the caller stops it."""
    binary = plane.tools.require(KUEUE.name)
    install_kueue_crds(plane)
    try:
        plane.create_namespace(KUEUE_NAMESPACE)
    except client.ApiException as error:
        if error.status != 409:
            raise
    assert plane.pki is not None
    certs = workdir / "kueue-webhook-certs"
    certs.mkdir(parents=True, exist_ok=True)
    cert_pem, key_pem = plane.pki.ca.issue(
        "kueue-webhook", dns_names=("localhost",), ip_addresses=("127.0.0.1",), server=True
    )
    (certs / "tls.crt").write_bytes(cert_pem)
    (certs / "tls.key").write_bytes(key_pem)
    _install_metrics_certs(cert_pem, key_pem)
    health, metrics, webhook = free_port(), free_port(), free_port()
    configuration: dict[str, Any] = {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": KUEUE_NAMESPACE,
        "manageJobsWithoutQueueName": False,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health}"},
        "metrics": {"bindAddress": f"127.0.0.1:{metrics}"},
        "webhook": {"host": "127.0.0.1", "port": webhook, "certDir": str(certs)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "integrations": {"frameworks": ["batch/job"]},
    }
    config_file = workdir / "kueue-config.yaml"
    config_file.write_text(json.dumps(configuration, indent=2), encoding="utf-8")
    argv = [
        str(binary),
        f"--config={config_file}",
        f"--kubeconfig={plane.admin_kubeconfig}",
        "--zap-log-level=info",
        # The on-demand visibility API server wants its own certificate at a fixed path
        # (/visibility) and an APIService; the tests read Workloads instead.
        f"--feature-gates={','.join(('VisibilityOnDemand=false', *feature_gates))}",
    ]
    process = ManagedProcess("kueue", argv, plane.workdir / "logs" / "kueue.log", workdir)
    plane.processes.append(process)  # stopped with the control plane if the caller does not
    process.wait_until(
        lambda: http_text(f"http://127.0.0.1:{health}/readyz") == "ok",
        _START_TIMEOUT_S,
        "ready (/readyz)",
    )
    return process


def _install_metrics_certs(cert_pem: bytes, key_pem: bytes) -> None:
    """Kueue v0.17 reads its metrics server's certificate from a fixed path when its internal
    certificate management is off (cmd/kueue/main.go: `/etc/kueue/metrics/certs`), where a real
    install mounts cert-manager's Secret. The test writes one there (CI runs as root); the
    files are replaced on every start and `remove_metrics_certs` takes them away."""
    try:
        METRICS_CERT_DIR.mkdir(parents=True, exist_ok=True)
        (METRICS_CERT_DIR / "tls.crt").write_bytes(cert_pem)
        (METRICS_CERT_DIR / "tls.key").write_bytes(key_pem)
    except OSError as error:
        raise RuntimeError(
            f"Kueue needs its metrics certificate in {METRICS_CERT_DIR} (a path fixed in Kueue "
            f"v0.17): cannot write it ({error}); run the integration tests as root"
        ) from None


def remove_metrics_certs() -> None:
    for name in ("tls.crt", "tls.key"):
        (METRICS_CERT_DIR / name).unlink(missing_ok=True)
    for folder in (METRICS_CERT_DIR, METRICS_CERT_DIR.parent, METRICS_CERT_DIR.parent.parent):
        try:
            folder.rmdir()
        except OSError:
            break  # not empty (someone else's), or gone
