"""`gputopo-scheduler extender` as kube-scheduler meets it: mutual TLS, a PKI minted per test.

The serving certificate (for 127.0.0.1) and kube-scheduler's client certificate come from two
throwaway CAs, as docs/extender.md sets them up; a third, "rogue" CA signs a client certificate
with the same CN that the extender must refuse.
"""

from __future__ import annotations

import json
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.controlplane import ControlPlane, ManagedProcess
from tests.controlplane.certs import CertificateAuthority
from tests.controlplane.kubeconfig import write_kubeconfig
from tests.integration.scheduler_env import REPO, SCHEDULER_NAMESPACE, SERVICE_ACCOUNT

CLIENT_NAME = "kube-scheduler"


@dataclass(frozen=True)
class ExtenderPki:
    serving_ca: Path  # kube-scheduler's tlsConfig.caFile
    serving_cert: Path
    serving_key: Path
    client_ca: Path  # the extender's --client-ca-file
    client: tuple[Path, Path]  # kube-scheduler's tlsConfig certFile, keyFile
    rogue: tuple[Path, Path]  # same CN, signed by a CA the extender does not trust

    @classmethod
    def mint(cls, directory: Path) -> ExtenderPki:
        directory.mkdir(parents=True, exist_ok=True)
        serving_ca = CertificateAuthority.create("gputopo-extender-serving-ca")
        client_ca = CertificateAuthority.create("gputopo-extender-client-ca")
        rogue_ca = CertificateAuthority.create("gputopo-extender-client-ca")

        def write(name: str, pem: tuple[bytes, bytes]) -> tuple[Path, Path]:
            (directory / f"{name}.crt").write_bytes(pem[0])
            (directory / f"{name}.key").write_bytes(pem[1])
            return directory / f"{name}.crt", directory / f"{name}.key"

        (directory / "serving-ca.crt").write_bytes(serving_ca.cert_pem)
        (directory / "client-ca.crt").write_bytes(client_ca.cert_pem)
        serving = write(
            "tls", serving_ca.issue("gputopo-extender", ip_addresses=("127.0.0.1",), server=True)
        )
        return cls(
            serving_ca=directory / "serving-ca.crt",
            serving_cert=serving[0],
            serving_key=serving[1],
            client_ca=directory / "client-ca.crt",
            client=write("kube-scheduler", client_ca.issue(CLIENT_NAME)),
            rogue=write("rogue", rogue_ca.issue(CLIENT_NAME)),
        )

    def client_context(self, certificate: tuple[Path, Path] | None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.serving_ca))
        if certificate is not None:
            context.load_cert_chain(str(certificate[0]), str(certificate[1]))
        return context


def extender_process(
    plane: ControlPlane,
    workdir: Path,
    port: int,
    probe_port: int,
    pki: ExtenderPki,
    extra: Sequence[str] = (),
) -> ManagedProcess:
    """`gputopo-scheduler extender` over mutual TLS, as the scheduler's ServiceAccount; ready
    once its plain-HTTP probe port says so."""
    token = plane.service_account_token(SCHEDULER_NAMESPACE, SERVICE_ACCOUNT)
    kubeconfig = workdir / "extender.kubeconfig"
    assert plane.pki is not None
    write_kubeconfig(kubeconfig, plane.url, plane.pki.ca_file, token=token)
    process = ManagedProcess(
        "gputopo-extender",
        [
            sys.executable,
            "-m",
            "gputopo.scheduler.cli",
            "extender",
            f"--listen=127.0.0.1:{port}",
            f"--probe-address=127.0.0.1:{probe_port}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.client_ca}",
            f"--client-name={CLIENT_NAME}",
            f"--kubeconfig={kubeconfig}",
            *extra,
        ],
        workdir / "extender.log",
        REPO,
    )
    process.wait_until(
        lambda: (
            urllib.request.urlopen(f"http://127.0.0.1:{probe_port}/readyz", timeout=2).read()
            == b"ok\n"
        ),
        30,
        "ready (/readyz on the probe port)",
    )
    return process


def extender_configuration(pki: ExtenderPki, port: int) -> dict[str, Any]:
    """The `extenders` entry docs/extender.md documents: HTTPS, kube-scheduler's client cert."""
    return {
        "urlPrefix": f"https://127.0.0.1:{port}/gputopo",
        "filterVerb": "filter",
        "prioritizeVerb": "prioritize",
        "preemptVerb": "preempt",
        "bindVerb": "bind",
        "weight": 5,
        "nodeCacheCapable": True,
        "enableHTTPS": True,
        "tlsConfig": {
            "certFile": str(pki.client[0]),
            "keyFile": str(pki.client[1]),
            "caFile": str(pki.serving_ca),
        },
        "httpTimeout": "5s",
        "managedResources": [{"name": "nvidia.com/gpu", "ignoredByScheduler": False}],
    }


def post(
    port: int, verb: str, body: object, context: ssl.SSLContext, timeout: float = 10
) -> tuple[int, Any]:
    """POST one verb over HTTPS: (status, decoded JSON answer)."""
    request = urllib.request.Request(
        f"https://127.0.0.1:{port}/gputopo/{verb}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
