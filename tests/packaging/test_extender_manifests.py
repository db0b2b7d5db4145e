"""daemonset/components/extender as rendered by the pinned kustomize: mutual TLS from a Secret,
probes on their own port, and a NetworkPolicy that admits only kube-scheduler to the verbs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gputopo.scheduler.cli import build_parser
from tests.packaging.kustomize import find, overlay, render


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    directory: Path = tmp_path_factory.mktemp("overlay") / "overlay"
    return render(overlay(directory, components=("extender",), namespace="gputopo-system"))


def _container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = find(objects, "Deployment", "gputopo-extender")
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def test_the_extender_serves_mutual_tls_from_its_secret(
    objects: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    container = _container(objects)
    env = {variable["name"]: variable["value"] for variable in container["env"]}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = build_parser().parse_args(["extender"])  # every variable is a flag's twin
    assert not args.insecure_no_auth
    mounted = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}["tls"]
    assert {args.tls_cert_file, args.tls_private_key_file, args.client_ca_file} == {
        f"{mounted}/tls.crt",
        f"{mounted}/tls.key",
        f"{mounted}/ca.crt",
    }
    assert args.client_name == ["kube-scheduler"]
    volumes = find(objects, "Deployment", "gputopo-extender")["spec"]["template"]["spec"]
    assert {v["name"]: v["secret"]["secretName"] for v in volumes["volumes"]} == {
        "tls": "gputopo-extender-tls"
    }
    # kubelet cannot present a client certificate: its probes go to the plain probe port.
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert args.probe_address == f":{ports['probes']}"
    assert args.listen == f":{ports['extender']}"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == "probes"


def test_only_kube_schedulers_pods_reach_the_verbs_port(objects: list[dict[str, Any]]) -> None:
    policy = find(objects, "NetworkPolicy", "gputopo-extender")["spec"]
    assert policy["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "gputopo-extender"}}
    assert policy["policyTypes"] == ["Ingress"]
    verbs, probes = policy["ingress"]
    assert verbs["ports"] == [{"port": "extender", "protocol": "TCP"}]
    assert verbs["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"component": "kube-scheduler"}},
        }
    ]
    assert probes == {"ports": [{"port": "probes", "protocol": "TCP"}]}
