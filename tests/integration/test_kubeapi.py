"""gputopo.core.kube against a real kube-apiserver: every credential kind the agent accepts, the
error statuses the publisher classifies, and server-side apply for the NodeResourceTopology."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from gputopo.agent.publish.calls import describe_api_error
from gputopo.agent.publish.nrt import GROUP, PLURAL, VERSION
from gputopo.core.kube import (
    APPLY_PATCH,
    MERGE_PATCH,
    KubeApiError,
    KubeClient,
    KubeConnectionError,
    load_incluster_config,
    load_kubeconfig,
)
from gputopo.core.retry import is_retryable
from tests.controlplane import ClusterObjects, ControlPlane, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def node(cluster_objects: ClusterObjects) -> str:
    name = f"kubeapi-{uuid.uuid4().hex[:8]}"
    cluster_objects.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
    return name


def kubeconfig(path: Path, server: str, cluster: dict[str, Any], user: dict[str, Any]) -> str:
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, **cluster}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(yaml.safe_dump(document))
    return str(path)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_token_kubeconfig_reads_and_merge_patches_a_node(
    control_plane: ControlPlane, node: str
) -> None:
    api = KubeClient(load_kubeconfig(str(control_plane.admin_kubeconfig)))
    read = api.read_node(node)
    assert read["metadata"]["name"] == node
    patch = {
        "metadata": {
            "resourceVersion": read["metadata"]["resourceVersion"],
            "labels": {"gputopo.io/probe": "1"},
        }
    }
    patched = api.patch_node(node, patch, field_manager="gputopo-agent", _content_type=MERGE_PATCH)
    assert patched["metadata"]["labels"]["gputopo.io/probe"] == "1"
    api.close()


def test_stale_resource_version_is_a_409_the_publisher_does_not_retry(
    control_plane: ControlPlane, node: str
) -> None:
    api = KubeClient(load_kubeconfig(str(control_plane.admin_kubeconfig)))
    version = api.read_node(node)["metadata"]["resourceVersion"]
    api.patch_node(node, {"metadata": {"labels": {"a": "1"}}}, _content_type=MERGE_PATCH)
    with pytest.raises(KubeApiError) as conflict:
        api.patch_node(
            node,
            {"metadata": {"resourceVersion": version, "labels": {"a": "2"}}},
            _content_type=MERGE_PATCH,
        )
    assert conflict.value.status == 409 and conflict.value.reason == "Conflict"
    assert not is_retryable(conflict.value)
    assert describe_api_error(conflict.value).startswith("HTTP 409 Conflict: ")


def test_missing_node_is_a_404_naming_it(control_plane: ControlPlane) -> None:
    api = KubeClient(load_kubeconfig(str(control_plane.admin_kubeconfig)))
    with pytest.raises(KubeApiError) as missing:
        api.read_node("no-such-node")
    assert missing.value.status == 404
    assert 'nodes "no-such-node" not found' in str(missing.value)


def test_client_certificate_from_files_and_from_inline_data(
    control_plane: ControlPlane, node: str, tmp_path: Path
) -> None:
    assert control_plane.pki is not None
    cert, key = control_plane.pki.ca.issue("kubeapi-test", ("system:masters",))
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(key)
    ca = control_plane.pki.ca_file
    from_files = kubeconfig(
        tmp_path / "files.kubeconfig",
        control_plane.url,
        {"certificate-authority": str(ca)},
        {"client-certificate": "tls.crt", "client-key": "tls.key"},  # relative to the file
    )
    inline = kubeconfig(
        tmp_path / "inline.kubeconfig",
        control_plane.url,
        {"certificate-authority-data": b64(ca.read_bytes())},
        {"client-certificate-data": b64(cert), "client-key-data": b64(key)},
    )
    for path in (from_files, inline):
        assert KubeClient(load_kubeconfig(path)).read_node(node)["metadata"]["name"] == node


def test_insecure_skip_tls_verify_with_a_token(
    control_plane: ControlPlane, node: str, tmp_path: Path
) -> None:
    path = kubeconfig(
        tmp_path / "insecure.kubeconfig",
        control_plane.url,
        {"insecure-skip-tls-verify": True},
        {"token": control_plane.admin_token},
    )
    assert KubeClient(load_kubeconfig(path)).read_node(node)["metadata"]["name"] == node


def test_wrong_certificate_authority_is_a_connection_error(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    assert control_plane.pki is not None
    other_ca = control_plane.pki.ca.create().cert_pem
    path = kubeconfig(
        tmp_path / "wrong-ca.kubeconfig",
        control_plane.url,
        {"certificate-authority-data": b64(other_ca)},
        {"token": control_plane.admin_token},
    )
    with pytest.raises(KubeConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        KubeClient(load_kubeconfig(path)).read_node("x")


def test_in_cluster_service_account_token_is_re_read_when_rotated(
    control_plane: ControlPlane,
    node: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert control_plane.pki is not None
    host, port = control_plane.url.removeprefix("https://").rsplit(":", 1)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "ca.crt").write_bytes(control_plane.pki.ca_file.read_bytes())
    (account / "token").write_text("not-a-valid-token")
    api = KubeClient(load_incluster_config(str(account)))
    with pytest.raises(KubeApiError) as refused:
        api.read_node(node)
    assert refused.value.status == 401
    (account / "token").write_text(control_plane.admin_token + "\n")  # the kubelet rotated it
    assert api.read_node(node)["metadata"]["name"] == node


def test_server_side_apply_of_a_node_resource_topology(
    control_plane: ControlPlane, gputopo_crds: list[str]
) -> None:
    api = KubeClient(load_kubeconfig(str(control_plane.admin_kubeconfig)))
    name = f"kubeapi-{uuid.uuid4().hex[:8]}"
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "NodeResourceTopology",
        "metadata": {"name": name},
        "topologyPolicies": ["None"],
        "zones": [{"name": "node-0", "type": "Node"}],
    }
    try:
        with pytest.raises(KubeApiError) as missing:
            api.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)
        assert missing.value.status == 404
        applied = api.patch_cluster_custom_object(
            GROUP,
            VERSION,
            PLURAL,
            name,
            body,
            field_manager="gputopo-agent",
            force=True,
            _content_type=APPLY_PATCH,
        )
        assert applied["zones"][0]["name"] == "node-0"
        stored = api.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)
        assert stored["metadata"]["resourceVersion"] == applied["metadata"]["resourceVersion"]
    finally:
        api.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    with pytest.raises(KubeApiError) as deleted:
        api.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    assert deleted.value.status == 404


def test_nobody_listening_is_a_retryable_connection_error(tmp_path: Path) -> None:
    path = kubeconfig(
        tmp_path / "closed.kubeconfig",
        f"https://127.0.0.1:{free_port()}",
        {"insecure-skip-tls-verify": True},
        {"token": "t"},
    )
    with pytest.raises(KubeConnectionError) as refused:
        KubeClient(load_kubeconfig(path)).read_node("x")
    assert is_retryable(refused.value)
    assert "ConnectionRefusedError" in str(refused.value)
