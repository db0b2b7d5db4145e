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

Configuration that can never work is a :class:`KubeConfigError` when it is loaded, so both
deployables stop at start-up with one line instead of retrying forever (docs/operations.md,
"Limits"): the kubeconfig is read through :mod:`gputopo.core.documents` (at most
:data:`MAX_KUBECONFIG_BYTES`, UTF-8, nesting and numbers bounded); the server must be an
``http(s)://`` URL with a valid host and a port in 1..65535; names, paths and flags have their
types; a token must be one printable line of at most :data:`MAX_TOKEN_BYTES` (it becomes an HTTP
header), and a token file must be readable with such a token when the configuration is loaded.
Certificates and keys that are not PEM fail when the TLS context is built (:class:`KubeClient`
builds it at once). A valid configuration whose server does not answer is not an error here:
the callers retry it, as they retry any unanswered request.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import ssl
import tempfile
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from gputopo.core import documents
from gputopo.core.kube.errors import KubeConfigError, KubeConnectionError

SERVICE_ACCOUNT_DIR: Final = "/var/run/secrets/kubernetes.io/serviceaccount"

# A kubeconfig with a few clusters and inline certificates is a few KiB; one that embeds a whole
# CA bundle may reach a few hundred. 1 MiB leaves room for that, and refuses /dev/zero after it.
MAX_KUBECONFIG_BYTES: Final = 1024 * 1024
# Certificates and keys read from files (a client certificate with inline data for the other
# half): the same bound.
MAX_CREDENTIAL_FILE_BYTES: Final = 1024 * 1024
# A bearer token becomes one HTTP header; ServiceAccount JWTs are about 1 KiB and OIDC ones a few.
MAX_TOKEN_BYTES: Final = 64 * 1024
# What a token may hold: printable ASCII without spaces (RFC 6750's b64token and a JWT both fit),
# so a CR/LF cannot add a header and a NUL cannot end one early.
_TOKEN: Final = re.compile(r"[\x21-\x7e]+")
_HOSTNAME: Final = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)

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
    namespace: str | None = None  # the context's default namespace (kubectl's -n default)

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context for ``server``; a bad certificate or key is a KubeConfigError."""
        context = ssl.create_default_context()
        try:
            if self.insecure_skip_tls_verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            elif self.ca_data is not None:
                context.load_verify_locations(cadata=self.ca_data.decode("ascii", "replace"))
            elif (
                self.ca_file is not None
            ):  # read bounded here, never by OpenSSL (a FIFO, /dev/zero)
                ca = _read_bounded(self.ca_file, self.source)
                context.load_verify_locations(cadata=ca.decode("ascii", "replace"))
            if self.client_cert_file is not None or self.client_cert_data is not None:
                self._load_client_certificate(context)
        except (ssl.SSLError, OSError) as error:
            raise KubeConfigError(self.source, f"TLS setup failed: {_one_line(error)}") from None
        return context

    def _load_client_certificate(self, context: ssl.SSLContext) -> None:
        # ssl loads certificates only from files: the bounded reads (never OpenSSL's own, which
        # would wait on a FIFO or read /dev/zero for ever) go to a private temporary file,
        # removed at once.
        with tempfile.TemporaryDirectory(prefix="gputopo-kube-") as directory:
            cert = self.client_cert_data or _read_bounded(self.client_cert_file or "", self.source)
            key = self.client_key_data or (
                _read_bounded(self.client_key_file, self.source) if self.client_key_file else b""
            )
            pem = Path(directory) / "client.pem"
            pem.touch(mode=0o600)
            pem.write_bytes(cert.rstrip(b"\n") + b"\n" + key)
            context.load_cert_chain(str(pem))

    def bearer_token(self) -> str | None:
        """The token to send now: a token file is re-read every time (bound tokens rotate).

        A token file that cannot be read, or holds no valid token, is a KubeConnectionError
        (retried: a kubelet may be rotating it) unless the kubeconfig also has a token."""
        if self.token_file is not None:
            try:
                return read_token_file(self.token_file, self.source) or self.token
            except KubeConfigError as error:
                if self.token is not None:
                    return self.token
                raise KubeConnectionError(str(error)) from None
        return self.token


def read_token_file(path: str, source: str) -> str | None:
    """The token in ``path`` (surrounding whitespace stripped; None when empty), read at most
    :data:`MAX_TOKEN_BYTES` + 1 bytes far; KubeConfigError when it cannot be one."""
    try:
        text = documents.read_text(path, what="token file", max_bytes=MAX_TOKEN_BYTES)
    except documents.DocumentError as error:
        raise KubeConfigError(source, str(error)) from None
    token = text.strip()
    if token:
        check_token(token, source, f"token file {path}")
    return token or None


def check_token(token: str, source: str, what: str = "token") -> None:
    """A token is one printable header value: no CR/LF, NUL or spaces, at most 64 KiB."""
    if len(token) > MAX_TOKEN_BYTES:
        raise KubeConfigError(source, f"{what}: longer than {MAX_TOKEN_BYTES} bytes")
    if _TOKEN.fullmatch(token) is None:
        raise KubeConfigError(
            source, f"{what}: a token is printable ASCII without spaces or line breaks"
        )


def check_server(server: object, where: str, cluster: str) -> str:
    """``server`` if it is an ``http(s)://host[:port][/path]`` URL with a valid host (an IP
    literal or a DNS name) and a port in 1..65535, else KubeConfigError."""
    shown = repr(server) if len(repr(server)) <= 80 else repr(server)[:80] + "..."
    if not isinstance(server, str):
        raise KubeConfigError(where, f"cluster {cluster!r}: server {shown} is not a URL")
    try:
        url = urllib.parse.urlsplit(server)
        port = url.port
    except ValueError as error:  # a broken IPv6 literal, a port out of range or not a number
        raise KubeConfigError(
            where, f"cluster {cluster!r}: server {shown} is not a URL ({error})"
        ) from None
    if url.scheme not in ("https", "http"):
        raise KubeConfigError(
            where, f"cluster {cluster!r}: server {shown} is not a URL (http:// or https://)"
        )
    host = url.hostname or ""
    if not host or not _valid_host(host):
        raise KubeConfigError(where, f"cluster {cluster!r}: server {shown} has no valid host")
    if port == 0:
        raise KubeConfigError(where, f"cluster {cluster!r}: server {shown}: port 0")
    if any(ord(c) < 0x21 or ord(c) > 0x7E for c in server):
        raise KubeConfigError(where, f"cluster {cluster!r}: server {shown}: not printable ASCII")
    return server


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return _HOSTNAME.fullmatch(host) is not None
    return True


def _read_bounded(path: str, source: str) -> bytes:
    """A certificate or key file, at most :data:`MAX_CREDENTIAL_FILE_BYTES` read."""
    data = documents.read_limited(path, MAX_CREDENTIAL_FILE_BYTES)
    if len(data) > MAX_CREDENTIAL_FILE_BYTES:
        raise KubeConfigError(source, f"{path}: larger than {MAX_CREDENTIAL_FILE_BYTES} bytes")
    return data


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
    if not port.isdigit() or len(port) > 5 or not 1 <= int(port) <= 65535:
        raise KubeConfigError(source, f"KUBERNETES_SERVICE_PORT={port!r}: not a port number")
    if not _valid_host(host):
        raise KubeConfigError(source, f"KUBERNETES_SERVICE_HOST={host!r}: not an IP or a host name")
    token_file = os.path.join(service_account_dir, "token")
    ca_file = os.path.join(service_account_dir, "ca.crt")
    for path in (token_file, ca_file):
        if not os.path.isfile(path):
            raise KubeConfigError(source, f"{path} is missing (no ServiceAccount token mounted?)")
    netloc = f"[{host}]" if ":" in host else host
    read_token_file(token_file, source)  # an unusable mounted token stops the start
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
        text = documents.read_text(path, what="kubeconfig", max_bytes=MAX_KUBECONFIG_BYTES)
        document = documents.load_yaml(text, source=source)
    except documents.DocumentError as error:
        detail = str(error).removeprefix(f"{source}: ").replace("not valid YAML", "not YAML", 1)
        if "integer string conversion" in detail:  # Python's own digit limit, said plainly
            detail = "not YAML: an integer of more than 4300 digits"
        raise KubeConfigError(source, detail) from None
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
    if not isinstance(name, str):
        raise KubeConfigError(source, f"current-context {_short(name)} is not a string")
    context_entry = _named(document, "contexts", "context", str(name), source)
    cluster_name = context_entry.get("cluster")
    user_name = context_entry.get("user")
    if not cluster_name:
        raise KubeConfigError(source, f"context {_short(name)} names no cluster")
    for key, value in (("cluster", cluster_name), ("user", user_name)):
        if value is not None and not isinstance(value, str):
            raise KubeConfigError(
                source, f"context {_short(name)}: {key} {_short(value)} is not a name"
            )
    cluster = _named(document, "clusters", "cluster", str(cluster_name), source)
    user = _named(document, "users", "user", str(user_name), source) if user_name else {}
    where = f"{source} (context {name if len(name) <= 60 else name[:60] + '...'})"

    for key, what in _UNSUPPORTED_CLUSTER_FIELDS.items():
        if cluster.get(key):
            raise KubeConfigError(
                where,
                f"cluster {_short(cluster_name)} uses {what} ({key}): not supported by gputopo",
            )
    for key, what in _UNSUPPORTED_USER_FIELDS.items():
        if user.get(key):
            raise KubeConfigError(
                where,
                f"user {_short(user_name)} authenticates with {what} ({key}), which gputopo "
                "does not support; use a token, tokenFile or client certificate",
            )
    server = check_server(cluster.get("server"), where, str(cluster_name))

    def file(mapping: Mapping[str, Any], key: str) -> str | None:
        value = mapping.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str) or "\0" in value:
            raise KubeConfigError(where, f"{key}: expected a file path, got {_short(value)}")
        return str(base / os.path.expanduser(value))

    def data(mapping: Mapping[str, Any], key: str) -> bytes | None:
        value = mapping.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise KubeConfigError(where, f"{key}: not base64")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise KubeConfigError(where, f"{key}: not base64") from None

    def flag(mapping: Mapping[str, Any], key: str) -> bool:
        value = mapping.get(key, False)
        if not isinstance(value, bool):
            raise KubeConfigError(where, f"{key}: expected true or false, got {_short(value)}")
        return value

    def text(mapping: Mapping[str, Any], key: str) -> str | None:
        value = mapping.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str) or not _valid_host(value):
            raise KubeConfigError(where, f"{key}: expected a host name, got {_short(value)}")
        return value

    token = user.get("token")
    if token is not None and not isinstance(token, str):
        raise KubeConfigError(where, f"user {_short(user_name)}: token is not a string")
    if token:
        check_token(token, where, f"user {_short(user_name)}: token")
    config = ClusterConfig(
        server=server.rstrip("/"),
        source=where,
        ca_file=file(cluster, "certificate-authority"),
        ca_data=data(cluster, "certificate-authority-data"),
        insecure_skip_tls_verify=flag(cluster, "insecure-skip-tls-verify"),
        tls_server_name=text(cluster, "tls-server-name"),
        client_cert_file=file(user, "client-certificate"),
        client_key_file=file(user, "client-key"),
        client_cert_data=data(user, "client-certificate-data"),
        client_key_data=data(user, "client-key-data"),
        token=token or None,
        token_file=file(user, "tokenFile"),
        namespace=_context_namespace(context_entry),
    )
    has_cert = config.client_cert_file is not None or config.client_cert_data is not None
    has_key = config.client_key_file is not None or config.client_key_data is not None
    if has_cert != has_key:
        raise KubeConfigError(
            where, f"user {_short(user_name)}: a client certificate needs its key"
        )
    if config.token_file is not None and config.token is None:
        read_token_file(config.token_file, where)  # unreadable now: a start-up error
    return config


def _context_namespace(context_entry: Mapping[str, Any]) -> str | None:
    """The context's ``namespace``; one that is not a name is ignored here (only kubectl-style
    tools read it, and they fall back to ``default``) rather than failing the connection."""
    namespace = context_entry.get("namespace")
    return namespace if isinstance(namespace, str) and namespace else None


def _named(document: Mapping[str, Any], section: str, field: str, name: str, source: str) -> Any:
    entries = document.get(section)
    if not isinstance(entries, list):
        raise KubeConfigError(source, f"not a kubeconfig ({section} is not a list)")
    for entry in entries:
        if isinstance(entry, dict) and str(entry.get("name")) == name:
            value = entry.get(field)
            if value is None:
                return {}
            if not isinstance(value, dict):
                raise KubeConfigError(
                    source, f"{section} entry {_short(name)}: {field} is not a map"
                )
            return value
    raise KubeConfigError(source, f"no {section[:-1]} named {_short(name)}")


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
