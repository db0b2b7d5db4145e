"""A small Kubernetes REST client: the agent's few calls, over HTTP/1.1 on ``ssl`` sockets.

Why not the official ``kubernetes`` package: importing it costs the agent about 30 MiB of
resident memory (its generated models, ``urllib3``, ``requests``, ``oauthlib``), on every GPU
node, for a handful of calls. The agent reads and patches its own Node and gets, applies and
deletes its NodeResourceTopology; that is all this module does. The scheduler sends its
requests and watches through the same transport (:class:`HttpConnections`) and reads its
configuration with :func:`load_config` where it can, keeping the official client for the rest.

Method names and keyword arguments are those of ``kubernetes.client.CoreV1Api`` and
``CustomObjectsApi`` (``read_node``, ``patch_node``, ``get_cluster_custom_object``, ...), so the
publisher takes either; answers are plain JSON dicts. An HTTP error status raises
:class:`KubeApiError` (``status``, ``reason``, ``body``, as ``ApiException`` has them); a
connection that fails raises :class:`KubeConnectionError`, an ``OSError``, which the publisher
retries like any connection failure.

Configuration (:func:`load_config`): an explicit kubeconfig; else the in-cluster ServiceAccount
when ``KUBERNETES_SERVICE_HOST`` is set; else ``$KUBECONFIG`` (its first existing file) or
``~/.kube/config``. Supported credentials: bearer ``token``, ``tokenFile``, client certificate
and key (files or ``-data``); the CA as a file or ``-data``, or ``insecure-skip-tls-verify``.
Exec plugins, auth providers, basic auth, impersonation and proxies are refused with a one-line
:class:`KubeConfigError` naming the file. A token that lives in a file (the in-cluster
ServiceAccount's bound token, ``tokenFile``) is re-read for every request, so rotation works.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import os
import queue
import socket
import ssl
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

import yaml

SERVICE_ACCOUNT_DIR: Final = "/var/run/secrets/kubernetes.io/serviceaccount"
MERGE_PATCH: Final = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH: Final = "application/strategic-merge-patch+json"
JSON_PATCH: Final = "application/json-patch+json"
APPLY_PATCH: Final = "application/apply-patch+yaml"
PATCH_TYPES: Final = frozenset({MERGE_PATCH, STRATEGIC_MERGE_PATCH, JSON_PATCH, APPLY_PATCH})
DEFAULT_TIMEOUT_S: Final = 30.0
USER_AGENT: Final = "gputopo-agent"

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


class KubeConfigError(ValueError):
    """A kubeconfig or in-cluster configuration the agent cannot use: one line naming it."""

    def __init__(self, source: str, detail: str) -> None:
        super().__init__(f"{source}: {detail}")
        self.source = source
        self.detail = detail


class KubeApiError(Exception):
    """The API server answered with an error status (``status``, ``reason``, ``body``)."""

    def __init__(self, method: str, path: str, status: int, reason: str, body: str) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.reason = reason
        self.body = body
        message = ""
        try:
            document = json.loads(body)
            if isinstance(document, dict):
                message = str(document.get("message", ""))
        except ValueError:
            message = ""
        text = f"{method} {path}: HTTP {status} {reason}".rstrip()
        super().__init__(f"{text}: {message}" if message else text)


class KubeConnectionError(ConnectionError):
    """No answer from the API server (refused, reset, timed out, TLS failure)."""


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
    """The agent's rule: ``kubeconfig`` if given; else in-cluster when
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
                f"cluster {cluster_name!r} uses {what} ({key}): not supported by gputopo-agent",
            )
    for key, what in _UNSUPPORTED_USER_FIELDS.items():
        if user.get(key):
            raise KubeConfigError(
                where,
                f"user {user_name!r} authenticates with {what} ({key}), which gputopo-agent "
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


# -- the client -------------------------------------------------------------------------------


# Pooled connections idle longer than this are closed rather than reused: kube-apiserver's
# HTTP/1.1 server closes connections idle for 90 s, and a request sent on one it has closed
# fails (retried once, on a fresh connection).
MAX_IDLE_S: Final = 60.0


class HttpConnections:
    """Kept-alive HTTP/1.1 connections to one API server, shared by any number of threads.

    A LIFO pool: a thread takes an idle connection (or opens one), sends one request, reads
    the whole answer and puts the connection back. The agent uses one at a time; the
    scheduler's bind and event workers use many (``scheduler/runtime/kube.py``), and its
    watches each take a dedicated connection of their own (:meth:`open_stream`).

    HTTP/1.1 is spoken directly on the (TLS) socket rather than through ``http.client``:
    one ``sendall`` per request and a status line and a few headers parsed from a buffered
    reader, without the ``email`` package's header parser. Measured on a real API server
    that halves the transport's CPU per request (the scheduler makes two per pod).
    """

    def __init__(
        self,
        server: str,
        *,
        ssl_context: ssl.SSLContext | None,
        tls_server_name: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        url = urllib.parse.urlsplit(server)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"API server URL {server!r}: not an http(s) URL")
        if url.scheme == "https" and ssl_context is None:
            raise ValueError(f"API server URL {server!r}: https needs a TLS context")
        self.server = server
        self.timeout_s = timeout_s
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._host_header = url.netloc.rpartition("@")[2]
        self._origin = f"{url.scheme}://{self._host_header}"  # errors name origin + target
        self._base_path = url.path.rstrip("/")
        self._ssl = ssl_context if url.scheme == "https" else None
        self._tls_server_name = tls_server_name
        self._idle: queue.LifoQueue[_Connection] = queue.LifoQueue()

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

    def _take_idle(self) -> _Connection | None:
        """A pooled connection idle for less than MAX_IDLE_S, or None; older ones are closed
        (kube-apiserver closes HTTP/1.1 connections idle for 90 s)."""
        now = time.monotonic()
        while True:
            try:
                connection = self._idle.get_nowait()
            except queue.Empty:
                return None
            if now - connection.idle_since < MAX_IDLE_S:
                return connection
            connection.close()

    def _connect(self, timeout_s: float) -> _Connection:
        sock = socket.create_connection((self._host, self._port), timeout_s)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl is not None:
                sock = self._ssl.wrap_socket(
                    sock, server_hostname=self._tls_server_name or self._host
                )
        except BaseException:
            sock.close()
            raise
        return _Connection(sock)

    def _request_bytes(
        self, method: str, target: str, payload: bytes | None, headers: Mapping[str, str]
    ) -> bytes:
        lines = [f"{method} {target} HTTP/1.1\r\nHost: {self._host_header}\r\n"]
        for name, value in headers.items():
            if "\n" in value or "\r" in value:
                raise ValueError(f"HTTP header {name}: a value must be one line")
            lines.append(f"{name}: {value}\r\n")
        if payload is not None:
            lines.append(f"Content-Length: {len(payload)}\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")
        return head + payload if payload else head

    def exchange(
        self,
        method: str,
        target: str,
        payload: bytes | None,
        headers: Mapping[str, str],
        timeout_s: float | None = None,
    ) -> tuple[int, str, bytes]:
        """Send one request (``target``: path and query) and read the whole answer:
        (status, reason, body). No answer raises :class:`KubeConnectionError`."""
        timeout = timeout_s or self.timeout_s
        target = self._base_path + target
        request = self._request_bytes(method, target, payload, headers)
        for attempt in range(2):
            connection: _Connection | None = None
            reused = False
            answered = False
            try:
                # The retry never takes another pooled connection: after a quiet spell every
                # one of them may have been closed by the server.
                connection = self._take_idle() if attempt == 0 else None
                if connection is not None:
                    reused = True
                    connection.sock.settimeout(timeout)
                else:
                    connection = self._connect(timeout)
                connection.sock.sendall(request)
                head = _read_head(connection.reader)
                answered = True
                data = _read_body(connection.reader, head, method)
            except (OSError, HttpProtocolError) as error:
                if connection is not None:
                    connection.close()
                # A kept-alive connection the server (or a load balancer) closed while idle:
                # nothing was answered, so nothing was processed and one fresh attempt is safe.
                stale = isinstance(error, BrokenPipeError | ConnectionResetError | ssl.SSLEOFError)
                if reused and stale and not answered and attempt == 0:
                    continue
                where = f"{method} {self._origin}{target}"
                raise KubeConnectionError(f"{where}: {type(error).__name__}: {error}") from None
            if head.will_close:
                connection.close()
            else:
                connection.idle_since = time.monotonic()
                self._idle.put(connection)
            return head.status, head.reason, data
        raise AssertionError("unreachable")  # pragma: no cover

    def open_stream(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        timeout_s: float,
        connect_timeout_s: float = 10.0,
    ) -> HttpStream:
        """Send one request on a connection of its own and return once the answer's head is
        read; the body is read as it arrives (a watch). Never pooled: closed when done."""
        target = self._base_path + target
        request = self._request_bytes(method, target, None, headers)
        connection: _Connection | None = None
        try:
            connection = self._connect(connect_timeout_s)
            connection.sock.settimeout(timeout_s)
            connection.sock.sendall(request)
            head = _read_head(connection.reader)
        except (OSError, HttpProtocolError) as error:
            if connection is not None:
                connection.close()
            where = f"{method} {self._origin}{target}"
            raise KubeConnectionError(f"{where}: {type(error).__name__}: {error}") from None
        return HttpStream(connection, head, method, f"{method} {self._origin}{target}")


class HttpProtocolError(Exception):
    """An answer that is not the HTTP/1.1 this client reads."""


class ServerDisconnected(ConnectionResetError):
    """The server closed the connection before answering."""


_MAX_LINE: Final = 65536
_MAX_HEADERS: Final = 100


class _Connection:
    """One HTTP/1.1 connection: a socket (TLS-wrapped for https) and a buffered reader on it."""

    __slots__ = ("idle_since", "reader", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = cast(io.BufferedReader, sock.makefile("rb", buffering=65536))
        self.idle_since = time.monotonic()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.reader.close()
        with contextlib.suppress(OSError):
            self.sock.close()

    def interrupt(self) -> None:
        """End a read blocked in another thread: shut the socket itself down (under any TLS,
        whose state only the reading thread touches)."""
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)


@dataclass(frozen=True)
class _Head:
    status: int
    reason: str
    headers: dict[str, str]  # names lower-cased
    will_close: bool


def _read_head(reader: io.BufferedReader) -> _Head:
    while True:
        line = reader.readline(_MAX_LINE + 1)
        if not line:
            raise ServerDisconnected("the server closed the connection without answering")
        version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise HttpProtocolError(f"not an HTTP/1.x status line: {line[:80]!r}")
        headers: dict[str, str] = {}
        while True:
            field = reader.readline(_MAX_LINE + 1)
            if field in (b"\r\n", b"\n"):
                break
            if not field:
                raise HttpProtocolError("the connection closed inside the response headers")
            if len(field) > _MAX_LINE or len(headers) >= _MAX_HEADERS:
                raise HttpProtocolError("response headers too long")
            name, colon, value = field.decode("latin-1").partition(":")
            if not colon:
                raise HttpProtocolError(f"not a header line: {field[:80]!r}")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        status = int(code)
        if 100 <= status < 200:
            continue  # an interim answer (100 Continue): the real one follows
        tokens = headers.get("connection", "").lower()
        will_close = "close" in tokens or (version == "HTTP/1.0" and "keep-alive" not in tokens)
        if "transfer-encoding" not in headers and "content-length" not in headers:
            will_close = will_close or status not in (204, 304)  # the body ends at close
        return _Head(status, reason, headers, will_close)


def _body_length(head: _Head, method: str) -> int | None:
    """The body's length in bytes; None for chunked, -1 for "until the server closes"."""
    if method == "HEAD" or head.status in (204, 304):
        return 0
    encoding = head.headers.get("transfer-encoding")
    if encoding is not None:
        if encoding.lower() != "chunked":
            raise HttpProtocolError(f"unsupported Transfer-Encoding {encoding!r}")
        return None
    length = head.headers.get("content-length")
    if length is None:
        return -1
    if not length.isdigit():
        raise HttpProtocolError(f"bad Content-Length {length!r}")
    return int(length)


def _read_exactly(reader: io.BufferedReader, size: int) -> bytes:
    data = reader.read(size)
    if len(data) < size:
        raise HttpProtocolError(f"the connection closed after {len(data)} of {size} body bytes")
    return data


def _read_body(reader: io.BufferedReader, head: _Head, method: str) -> bytes:
    length = _body_length(head, method)
    if length is None:
        return b"".join(_chunks(reader))
    if length < 0:
        return reader.read()
    return _read_exactly(reader, length) if length else b""


def _chunks(reader: io.BufferedReader) -> Iterator[bytes]:
    """A chunked body's chunks, each as soon as it has arrived whole."""
    while True:
        line = reader.readline(_MAX_LINE + 1)
        if not line:
            raise HttpProtocolError("the connection closed inside a chunked body")
        size_text = line.split(b";", 1)[0].strip()
        if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
            raise HttpProtocolError(f"bad chunk size line {line[:80]!r}")
        size = int(size_text, 16)
        if size == 0:
            while reader.readline(_MAX_LINE + 1) not in (b"\r\n", b"\n", b""):
                pass  # trailer fields: none that matter here
            return
        data = _read_exactly(reader, size)
        if reader.readline(_MAX_LINE + 1) not in (b"\r\n", b"\n"):
            raise HttpProtocolError("a chunk not followed by CRLF")
        yield data


class HttpStream:
    """An answer read as it arrives, on a connection of its own (``open_stream``).

    :meth:`shutdown` may be called from another thread to end a read blocked on it promptly.
    """

    def __init__(self, connection: _Connection, head: _Head, method: str, where: str) -> None:
        self._connection = connection
        self._head = head
        self._method = method
        self._where = where
        self.status = head.status
        self.reason = head.reason
        self.headers = head.headers

    def chunks(self) -> Iterator[bytes]:
        """The body, piece by piece; a broken connection raises :class:`KubeConnectionError`."""
        reader = self._connection.reader
        try:
            length = _body_length(self._head, self._method)
            if length is None:
                yield from _chunks(reader)
            elif length < 0:
                while data := reader.read1(65536):
                    yield data
            elif length:
                yield _read_exactly(reader, length)
        except (OSError, HttpProtocolError, ValueError) as error:
            # ValueError: the reader was closed under us (shutdown then close).
            raise KubeConnectionError(f"{self._where}: {type(error).__name__}: {error}") from None

    def read(self) -> bytes:
        """The whole body (an error answer's Status)."""
        return b"".join(self.chunks())

    def shutdown(self) -> None:
        """End the stream now, from any thread: a blocked read returns."""
        self._connection.interrupt()

    def close(self) -> None:
        self._connection.close()


class KubeClient:
    """The agent's calls over :class:`HttpConnections`; safe to share between threads."""

    def __init__(self, config: ClusterConfig, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.config = config
        self.timeout_s = timeout_s
        https = urllib.parse.urlsplit(config.server).scheme == "https"
        self._http = HttpConnections(
            config.server,
            ssl_context=config.ssl_context() if https else None,
            tls_server_name=config.tls_server_name,
            timeout_s=timeout_s,
        )

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        query: Mapping[str, str] | None = None,
    ) -> Any:
        """One call; the answer's JSON (None for an empty body)."""
        target = path
        if query:
            target += "?" + urllib.parse.urlencode(query)
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        token = self.config.bearer_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        payload = None
        if body is not None:
            payload = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = content_type
        status, reason, data = self._http.exchange(method, target, payload, headers)
        if status >= 400:
            raise KubeApiError(method, path, status, reason, data.decode("utf-8", "replace"))
        return json.loads(data) if data else None

    # -- the calls the agent makes (names and keywords of the official client) ----------------

    def read_node(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/api/v1/nodes/{_quote(name)}")
        return result

    def patch_node(
        self,
        name: str,
        body: Any,
        *,
        field_manager: str | None = None,
        _content_type: str = STRATEGIC_MERGE_PATCH,
    ) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "PATCH",
            f"/api/v1/nodes/{_quote(name)}",
            body=body,
            content_type=_patch_type(_content_type),
            query=_patch_query(field_manager, None),
        )
        return result

    def get_cluster_custom_object(
        self, group: str, version: str, plural: str, name: str
    ) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", _custom_path(group, version, plural, name))
        return result

    def patch_cluster_custom_object(
        self,
        group: str,
        version: str,
        plural: str,
        name: str,
        body: Any,
        *,
        field_manager: str | None = None,
        force: bool | None = None,
        _content_type: str = MERGE_PATCH,
    ) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "PATCH",
            _custom_path(group, version, plural, name),
            body=body,
            content_type=_patch_type(_content_type),
            query=_patch_query(field_manager, force),
        )
        return result

    def delete_cluster_custom_object(self, group: str, version: str, plural: str, name: str) -> Any:
        return self.request("DELETE", _custom_path(group, version, plural, name))


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _custom_path(group: str, version: str, plural: str, name: str) -> str:
    return f"/apis/{_quote(group)}/{_quote(version)}/{_quote(plural)}/{_quote(name)}"


def _patch_type(content_type: str) -> str:
    if content_type not in PATCH_TYPES:
        raise ValueError(
            f"patch content type {content_type!r}: expected one of {sorted(PATCH_TYPES)}"
        )
    return content_type


def _patch_query(field_manager: str | None, force: bool | None) -> dict[str, str]:
    query = {}
    if field_manager is not None:
        query["fieldManager"] = field_manager
    if force is not None:
        query["force"] = "true" if force else "false"
    return query


def client_from_config(kubeconfig: str | None = None, *, context: str | None = None) -> KubeClient:
    """:func:`load_config` then a :class:`KubeClient` (TLS set up, nothing sent yet)."""
    return KubeClient(load_config(kubeconfig, context=context))
