"""Where the API server is and how to authenticate to it: one kubeconfig policy for the agent
and the scheduler.

:func:`load_config`: an explicit kubeconfig; else the in-cluster ServiceAccount when
``KUBERNETES_SERVICE_HOST`` is set; else ``$KUBECONFIG`` (its first existing file) or
``~/.kube/config``; ``context`` picks a context other than ``current-context``. Supported
credentials: bearer ``token``, ``tokenFile``, client certificate and key (files or ``-data``);
the CA as a file or ``-data``, or ``insecure-skip-tls-verify``. Exec plugins, auth providers,
basic auth, impersonation and proxies are refused with a one-line :class:`KubeConfigError`
naming the file: neither deployable runs a credential plugin or imports the official client to
read its configuration. A token that lives in a file (the in-cluster ServiceAccount's bound
token, ``tokenFile``) is re-read whenever it is asked for, so rotation works.
"""

from __future__ import annotations

import base64
import binascii
import os
import ssl
import tempfile
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from gputopo.core.kube.errors import KubeConfigError, KubeConnectionError

SERVICE_ACCOUNT_DIR: Final = "/var/run/secrets/kubernetes.io/serviceaccount"

_UNSUPPORTED_USER_FIELDS: Final = {
    "exec": "an exec credential plugin",
    "auth-provider": "an auth provider",
    "username": "basic authentication",
    "password": "basic authentication",
    "as": "impersonation",
    "as-groups": "impersonation",
    "as-uid": "impersonation",
    "as-user-extra": "impersonation",
}
_UNSUPPORTED_CLUSTER_FIELDS: Final = {"proxy-url": "a proxy"}


@dataclass(frozen=True)
class ClusterConfig:
    """Where the API server is and how to authenticate to it."""

    server: str  # https://host:port[/path]
    source: str  # "kubeconfig /path (context c)" or "in-cluster ServiceAccount": for errors
    ca_file: str | None = None
    ca_data: bytes | None = None
    insecure_skip_tls_verify: bool = False
    tls_server_name: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None
    client_cert_data: bytes | None = None
    client_key_data: bytes | None = None
    token: str | None = None
    token_file: str | None = None

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context for ``server``; a bad certificate or key is a KubeConfigError."""
        context = ssl.create_default_context()
        try:
            if self.insecure_skip_tls_verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            elif self.ca_data is not None:
                context.load_verify_locations(cadata=self.ca_data.decode("ascii", "replace"))
            elif self.ca_file is not None:
                context.load_verify_locations(cafile=self.ca_file)
            if self.client_cert_file is not None or self.client_cert_data is not None:
                self._load_client_certificate(context)
        except (ssl.SSLError, OSError) as error:
            raise KubeConfigError(self.source, f"TLS setup failed: {_one_line(error)}") from None
        return context

    def _load_client_certificate(self, context: ssl.SSLContext) -> None:
        if self.client_cert_data is None and self.client_key_data is None:
            assert self.client_cert_file is not None
            context.load_cert_chain(self.client_cert_file, self.client_key_file)
            return
        # ssl loads certificates only from files: a private temporary file, removed at once.
        with tempfile.TemporaryDirectory(prefix="gputopo-kube-") as directory:
            cert = self.client_cert_data or Path(self.client_cert_file or "").read_bytes()
            key = self.client_key_data or Path(self.client_key_file or "").read_bytes()
            pem = Path(directory) / "client.pem"
            pem.touch(mode=0o600)
            pem.write_bytes(cert.rstrip(b"\n") + b"\n" + key)
            context.load_cert_chain(str(pem))

    def bearer_token(self) -> str | None:
        """The token to send now: a token file is re-read every time (bound tokens rotate)."""
        if self.token_file is not None:
            try:
                return Path(self.token_file).read_text(encoding="utf-8").strip() or self.token
            except OSError as error:
                if self.token is not None:
                    return self.token
                raise KubeConnectionError(
                    f"{self.source}: token file {self.token_file}: {error.strerror}"
                ) from None
        return self.token


# -- loading configuration --------------------------------------------------------------------


def load_config(kubeconfig: str | None = None, *, context: str | None = None) -> ClusterConfig:
    """The one rule for both deployables: ``kubeconfig`` if given; else in-cluster when
    ``KUBERNETES_SERVICE_HOST`` is set; else ``$KUBECONFIG`` or ``~/.kube/config``."""
    if kubeconfig:
        return load_kubeconfig(kubeconfig, context=context)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return load_incluster_config()
    return load_kubeconfig(default_kubeconfig_path(), context=context)


def default_kubeconfig_path() -> str:
    """The first existing file of ``$KUBECONFIG`` (colon-separated), else ``~/.kube/config``."""
    paths = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    for path in paths:
        if os.path.exists(path):
            return path
    return paths[0] if paths else os.path.join(os.path.expanduser("~"), ".kube", "config")


def load_incluster_config(service_account_dir: str = SERVICE_ACCOUNT_DIR) -> ClusterConfig:
    """The pod's ServiceAccount: API server from the environment, token and CA from files."""
    source = "in-cluster ServiceAccount"
    host = os.environ.get("KUBERNETES_SERVICE_HOST", "")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise KubeConfigError(source, "KUBERNETES_SERVICE_HOST and _PORT must both be set")
    if not port.isdigit():
        raise KubeConfigError(source, f"KUBERNETES_SERVICE_PORT={port!r}: not a port number")
    token_file = os.path.join(service_account_dir, "token")
    ca_file = os.path.join(service_account_dir, "ca.crt")
    for path in (token_file, ca_file):
        if not os.path.isfile(path):
            raise KubeConfigError(source, f"{path} is missing (no ServiceAccount token mounted?)")
    netloc = f"[{host}]" if ":" in host else host
    return ClusterConfig(
        server=f"https://{netloc}:{port}",
        source=source,
        ca_file=ca_file,
        token_file=token_file,
    )


def load_kubeconfig(path: str, *, context: str | None = None) -> ClusterConfig:
    """One context of a kubeconfig file (``current-context`` unless ``context`` is given)."""
    source = f"kubeconfig {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise KubeConfigError(source, f"cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise KubeConfigError(source, "not UTF-8 text") from None
    try:
        document = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as error:
        raise KubeConfigError(source, f"not YAML: {_one_line(error)}") from None
    return kubeconfig_from_document(document, Path(path).resolve().parent, source, context)


def kubeconfig_from_document(
    document: Any, base: Path, source: str, context: str | None = None
) -> ClusterConfig:
    """Resolve a parsed kubeconfig; relative file paths are relative to ``base``."""
    if not isinstance(document, dict):
        raise KubeConfigError(source, f"not a kubeconfig (a {type(document).__name__}, not a map)")
    name = context or document.get("current-context")
    if not name:
        raise KubeConfigError(source, "no current-context and no context given")
    context_entry = _named(document, "contexts", "context", str(name), source)
    cluster_name = context_entry.get("cluster")
    user_name = context_entry.get("user")
    if not cluster_name:
        raise KubeConfigError(source, f"context {name!r} names no cluster")
    cluster = _named(document, "clusters", "cluster", str(cluster_name), source)
    user = _named(document, "users", "user", str(user_name), source) if user_name else {}
    where = f"{source} (context {name})"

    for key, what in _UNSUPPORTED_CLUSTER_FIELDS.items():
        if cluster.get(key):
            raise KubeConfigError(
                where,
                f"cluster {cluster_name!r} uses {what} ({key}): not supported by gputopo",
            )
    for key, what in _UNSUPPORTED_USER_FIELDS.items():
        if user.get(key):
            raise KubeConfigError(
                where,
                f"user {user_name!r} authenticates with {what} ({key}), which gputopo "
                "does not support; use a token, tokenFile or client certificate",
            )
    server = cluster.get("server")
    if not isinstance(server, str) or urllib.parse.urlsplit(server).scheme not in ("https", "http"):
        raise KubeConfigError(where, f"cluster {cluster_name!r}: server {server!r} is not a URL")

    def file(mapping: Mapping[str, Any], key: str) -> str | None:
        value = mapping.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise KubeConfigError(where, f"{key}: expected a file path, got {value!r}")
        return str(base / os.path.expanduser(value))

    def data(mapping: Mapping[str, Any], key: str) -> bytes | None:
        value = mapping.get(key)
        if value is None or value == "":
            return None
        try:
            return base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            raise KubeConfigError(where, f"{key}: not base64") from None

    token = user.get("token")
    if token is not None and not isinstance(token, str):
        raise KubeConfigError(where, f"user {user_name!r}: token is not a string")
    config = ClusterConfig(
        server=server.rstrip("/"),
        source=where,
        ca_file=file(cluster, "certificate-authority"),
        ca_data=data(cluster, "certificate-authority-data"),
        insecure_skip_tls_verify=cluster.get("insecure-skip-tls-verify") is True,
        tls_server_name=cluster.get("tls-server-name") or None,
        client_cert_file=file(user, "client-certificate"),
        client_key_file=file(user, "client-key"),
        client_cert_data=data(user, "client-certificate-data"),
        client_key_data=data(user, "client-key-data"),
        token=token or None,
        token_file=file(user, "tokenFile"),
    )
    has_cert = config.client_cert_file is not None or config.client_cert_data is not None
    has_key = config.client_key_file is not None or config.client_key_data is not None
    if has_cert != has_key:
        raise KubeConfigError(where, f"user {user_name!r}: a client certificate needs its key")
    return config


def _named(document: Mapping[str, Any], section: str, field: str, name: str, source: str) -> Any:
    entries = document.get(section)
    if not isinstance(entries, list):
        raise KubeConfigError(source, f"not a kubeconfig ({section} is not a list)")
    for entry in entries:
        if isinstance(entry, dict) and entry.get("name") == name:
            value = entry.get(field)
            if value is None:
                return {}
            if not isinstance(value, dict):
                raise KubeConfigError(source, f"{section} entry {name!r}: {field} is not a map")
            return value
    raise KubeConfigError(source, f"no {section[:-1]} named {name!r}")


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
