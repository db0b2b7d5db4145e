"""gputopo.core.kube.config, the one kubeconfig policy (no cluster): what is accepted, and a
one-line error naming the file for everything else. The calls themselves are tested against a
real apiserver in tests/integration/test_kubeapi.py."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gputopo.core.kube import (
    KubeConfigError,
    KubeConnectionError,
    default_kubeconfig_path,
    load_config,
    load_incluster_config,
    load_kubeconfig,
)

REPO = Path(__file__).resolve().parents[4]


def write(path: Path, user: dict[str, Any], cluster: dict[str, Any] | None = None) -> str:
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c", "cluster": cluster or {"server": "https://10.0.0.1:6443"}},
            {"name": "other", "cluster": {"server": "https://other:443"}},
        ],
        "users": [{"name": "u", "user": user}],
        "contexts": [
            {"name": "main", "context": {"cluster": "c", "user": "u"}},
            {"name": "second", "context": {"cluster": "other", "user": "u"}},
        ],
        "current-context": "main",
    }
    path.write_text(yaml.safe_dump(document))
    return str(path)


def test_token_and_relative_paths_resolve_against_the_kubeconfig(tmp_path: Path) -> None:
    path = write(
        tmp_path / "config",
        {"client-certificate": "certs/c.crt", "client-key": "/abs/c.key"},
        {"server": "https://10.0.0.1:6443/", "certificate-authority": "ca.crt"},
    )
    config = load_kubeconfig(path)
    assert config.server == "https://10.0.0.1:6443"
    assert config.ca_file == str(tmp_path / "ca.crt")
    assert config.client_cert_file == str(tmp_path / "certs" / "c.crt")
    assert config.client_key_file == "/abs/c.key"
    assert config.source == f"kubeconfig {path} (context main)"


def test_a_named_context_overrides_current_context(tmp_path: Path) -> None:
    path = write(tmp_path / "config", {"token": "abc"})
    assert load_kubeconfig(path, context="second").server == "https://other:443"
    assert load_kubeconfig(path).bearer_token() == "abc"


def test_the_contexts_namespace_is_kept_for_kubectl_style_tools(tmp_path: Path) -> None:
    path = tmp_path / "config"
    write(path, {"token": "abc"})
    document = yaml.safe_load(path.read_text())
    document["contexts"][1]["context"]["namespace"] = "ml"
    document["contexts"][0]["context"]["namespace"] = ["not", "a", "name"]
    path.write_text(yaml.safe_dump(document))
    assert load_kubeconfig(str(path), context="second").namespace == "ml"
    assert load_kubeconfig(str(path)).namespace is None  # ignored, never a failed connection


def test_inline_data_is_base64_decoded(tmp_path: Path) -> None:
    data = base64.b64encode(b"PEM").decode()
    path = write(
        tmp_path / "config",
        {"client-certificate-data": data, "client-key-data": data},
        {"server": "https://h", "certificate-authority-data": data},
    )
    config = load_kubeconfig(path)
    assert config.ca_data == config.client_cert_data == config.client_key_data == b"PEM"


def test_token_file_is_read_on_every_request(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    config = load_kubeconfig(write(tmp_path / "config", {"tokenFile": str(token)}))
    assert config.bearer_token() == "first"
    token.write_text("rotated")
    assert config.bearer_token() == "rotated"
    token.unlink()
    with pytest.raises(KubeConnectionError, match="token file"):
        config.bearer_token()


@pytest.mark.parametrize(
    ("user", "what"),
    [
        ({"exec": {"command": "aws", "apiVersion": "client.authentication.k8s.io/v1"}}, "exec"),
        ({"auth-provider": {"name": "oidc"}}, "auth provider"),
        ({"username": "admin", "password": "secret"}, "basic authentication"),
        ({"token": "t", "as": "someone"}, "impersonation"),
    ],
)
def test_unsupported_authentication_is_one_line_naming_the_file(
    tmp_path: Path, user: dict[str, Any], what: str
) -> None:
    path = write(tmp_path / "config", user)
    with pytest.raises(KubeConfigError) as refused:
        load_kubeconfig(path)
    message = str(refused.value)
    assert message.startswith(f"kubeconfig {path} (context main): user 'u' authenticates with")
    assert what in message and "\n" not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("clusters: [\n", "not YAML"),
        ("- 1\n- 2\n", "not a kubeconfig (a list, not a map)"),
        ("clusters: 3\ncurrent-context: x\n", "contexts is not a list"),
        ("apiVersion: v1\n", "no current-context"),
        (
            "current-context: x\ncontexts: [{name: y, context: {cluster: c}}]\n",
            "no context named 'x'",
        ),
        (
            "current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\nclusters: []\n",
            "no cluster named 'c'",
        ),
        (
            "current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\n"
            "clusters: [{name: c, cluster: {server: 'localhost:6443'}}]\n",
            "server 'localhost:6443' is not a URL",
        ),
        (
            "current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\n"
            "clusters: [{name: c, cluster: {server: 'https://h', "
            "certificate-authority-data: '%%%'}}]\n",
            "certificate-authority-data: not base64",
        ),
        (
            "current-context: x\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
            "clusters: [{name: c, cluster: {server: 'https://h'}}]\n"
            "users: [{name: u, user: {client-certificate: a.crt}}]\n",
            "a client certificate needs its key",
        ),
        (
            "current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\n"
            "clusters: [{name: c, cluster: {server: 'https://h', proxy-url: 'http://p'}}]\n",
            "uses a proxy (proxy-url)",
        ),
    ],
)
def test_malformed_kubeconfig_is_one_line_naming_the_file(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "bad.kubeconfig"
    path.write_text(text)
    with pytest.raises(KubeConfigError) as refused:
        load_kubeconfig(str(path))
    message = str(refused.value)
    assert message.startswith(f"kubeconfig {path}")
    assert expected in message and "\n" not in message


def test_missing_kubeconfig_names_it(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match=f"kubeconfig {tmp_path}/nope: cannot read"):
        load_kubeconfig(str(tmp_path / "nope"))


def test_client_certificate_that_is_not_pem_is_a_config_error(tmp_path: Path) -> None:
    garbage = base64.b64encode(b"not a certificate").decode()
    path = write(
        tmp_path / "config", {"client-certificate-data": garbage, "client-key-data": garbage}
    )
    with pytest.raises(KubeConfigError, match="TLS setup failed"):
        load_kubeconfig(path).ssl_context()


def test_in_cluster_reads_the_service_account_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "token").write_text("sa-token\n")
    (tmp_path / "ca.crt").write_text("PEM")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    config = load_incluster_config(str(tmp_path))
    assert config.server == "https://[fd00::1]:443"
    assert config.ca_file == str(tmp_path / "ca.crt")
    assert config.bearer_token() == "sa-token"


def test_in_cluster_without_a_mounted_token_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(KubeConfigError, match=r"^in-cluster ServiceAccount: .*token is missing"):
        load_incluster_config(str(tmp_path))
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "https")
    with pytest.raises(KubeConfigError, match="KUBERNETES_SERVICE_PORT='https'"):
        load_incluster_config(str(tmp_path))


def test_default_kubeconfig_is_the_first_existing_file_of_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    present = write(tmp_path / "present", {"token": "t"})
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'absent'}:{present}")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert default_kubeconfig_path() == present
    assert load_config().bearer_token() == "t"


def test_the_agent_run_path_does_not_import_the_kubernetes_package(tmp_path: Path) -> None:
    """The official client costs ~30 MiB of RSS on every node; the agent must not load it (nor
    the scheduler, numpy, or grpc before a pod-resources client is used)."""
    path = write(tmp_path / "config", {"token": "t"})
    script = f"""
import sys
import gputopo.agent.cli
import gputopo.agent.cli_publish, gputopo.agent.runloop, gputopo.agent.publish.nrt
import gputopo.agent.publish.cycle, gputopo.core.kube, gputopo.core.retry
gputopo.agent.cli_publish._api_client({path!r})
heavy = sorted(
    m for m in ("kubernetes", "gputopo.scheduler", "numpy", "urllib3", "grpc") if m in sys.modules
)
print(",".join(heavy))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
