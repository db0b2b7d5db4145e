"""A thin JSON-dict layer over the API server, configured by the official client.

The runtime works on Kubernetes JSON dicts (the scheduler core's currency). The official
client's ``Configuration`` (kubeconfig, in-cluster ServiceAccount with token refresh, TLS) says
where and how to connect, but requests skip its model layer: deserialisation is slow on the hot
path and the generated models reformat MicroTime fields.

One-shot requests (binds, events, status patches: two or three per scheduled pod) go through
``_Connections``, kept-alive ``http.client`` connections. Profiled on the end-to-end benchmark,
the client's ``call_api`` and urllib3 cost about 0.7 ms of CPU per request against 0.3 ms here,
and that CPU is taken from the scheduling loop under the GIL. Watches stream through the
ApiClient (a handful of long requests). Configurations the lean path does not speak (an HTTP
proxy, basic auth) use the ApiClient for everything.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kubernetes.client
import kubernetes.config

JsonDict = dict[str, Any]
USER_AGENT = "gputopo-scheduler"


class KubeApiError(Exception):
    """A non-2xx answer from the API server, with its HTTP status and Status reason."""

    def __init__(self, method: str, path: str, status: int, reason: str, message: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status} {reason}: {message}")
        self.method = method
        self.path = path
        self.status = status
        self.reason = reason
        self.message = message


def _status_error(method: str, path: str, status: int, body: bytes) -> KubeApiError:
    reason = ""
    message = body.decode("utf-8", "replace")[:500]
    try:
        decoded = json.loads(body)
    except ValueError:
        decoded = None
    if isinstance(decoded, dict):
        reason = str(decoded.get("reason", ""))
        message = str(decoded.get("message", message))
    return KubeApiError(method, path, status, reason, message)


def load_api_client(kubeconfig: str | None) -> Any:
    """An ApiClient from --kubeconfig, $KUBECONFIG, the in-cluster ServiceAccount, or ~/.kube.

    Raises ValueError naming the source when none works.
    """
    configuration = kubernetes.client.Configuration()
    loader: Any = kubernetes.config  # its loaders are untyped
    try:
        if kubeconfig:
            loader.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            loader.load_incluster_config(client_configuration=configuration)
        else:
            loader.load_kube_config(client_configuration=configuration)
    except (kubernetes.config.ConfigException, OSError, TypeError) as err:
        source = kubeconfig or os.environ.get("KUBECONFIG") or "in-cluster/~/.kube/config"
        raise ValueError(
            f"kubeconfig {source!r}: cannot load a client configuration: {err}"
        ) from err
    # Four long-lived watches plus bind and event workers: a pool too small for them makes
    # urllib3 open (and TLS-handshake) a fresh connection per request.
    configuration.connection_pool_maxsize = 32
    return kubernetes.client.ApiClient(configuration)


class _Connections:
    """Kept-alive HTTP(S) connections to one API server, shared by the runtime's threads."""

    def __init__(self, configuration: Any) -> None:
        url = urllib.parse.urlsplit(str(configuration.host))
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"API server URL {configuration.host!r}: not an http(s) URL")
        self._configuration = configuration
        self._https = url.scheme == "https"
        self._host = url.hostname
        self._port = url.port or (443 if self._https else 80)
        self._prefix = url.path.rstrip("/")
        self._context: ssl.SSLContext | None = None
        self._server_hostname: str | None = None
        if self._https:
            self._context = _ssl_context(configuration)
            self._server_hostname = configuration.tls_server_name or None
        self._idle: queue.LifoQueue[http.client.HTTPConnection] = queue.LifoQueue()

    def _connect(self, timeout_s: float) -> http.client.HTTPConnection:
        if self._context is None:
            return http.client.HTTPConnection(self._host, self._port, timeout=timeout_s)
        return _HTTPSConnection(
            self._host, self._port, timeout_s, self._context, self._server_hostname
        )

    def request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str], timeout_s: float
    ) -> tuple[int, bytes]:
        """(status, body). A kept-alive connection the server has closed is retried once on a
        fresh one; transport failures are raised as OSError (ConnectionError)."""
        auth = self._configuration.auth_settings().get("BearerToken")
        if auth and auth.get("value"):
            headers["Authorization"] = str(auth["value"])
        target = self._prefix + path
        for attempt in (0, 1):
            try:
                connection = self._idle.get_nowait()
                reused = True
            except queue.Empty:
                connection = self._connect(timeout_s)
                reused = False
            try:
                if connection.sock is not None:
                    connection.sock.settimeout(timeout_s)
                connection.request(method, target, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
            except (http.client.HTTPException, OSError) as err:
                connection.close()
                stale = isinstance(
                    err, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
                )
                if reused and stale and attempt == 0:
                    continue
                if isinstance(err, OSError):
                    raise
                raise ConnectionError(f"{method} {path}: {type(err).__name__}: {err}") from err
            if response.will_close:
                connection.close()
            else:
                self._idle.put(connection)
            return response.status, data
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


def _ssl_context(configuration: Any) -> ssl.SSLContext:
    if not configuration.verify_ssl:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
        if configuration.assert_hostname is False:
            context.check_hostname = False
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file or None)
    return context


class _HTTPSConnection(http.client.HTTPSConnection):
    """HTTPS that verifies ``server_hostname`` (kubeconfig ``tls-server-name``) when set."""

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float,
        context: ssl.SSLContext,
        server_hostname: str | None,
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._tls_context = context
        self._server_hostname = server_hostname or host

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._tls_context.wrap_socket(self.sock, server_hostname=self._server_hostname)


def _query_pairs(query: Mapping[str, str | int | bool] | None) -> list[tuple[str, str]]:
    """Kubernetes spells booleans in query strings lower-case."""
    return [
        (key, str(value).lower() if isinstance(value, bool) else str(value))
        for key, value in (query or {}).items()
    ]


def _lean_transport(api_client: Any) -> _Connections | None:
    configuration = getattr(api_client, "configuration", None)
    if configuration is None or configuration.proxy or configuration.username:
        return None
    return _Connections(configuration)


@dataclass
class KubeApi:
    """JSON requests against one API server, configured by an official-client ApiClient."""

    api_client: Any
    request_timeout_s: float = 30.0
    _lean: _Connections | None = field(default=None, init=False, repr=False)
    _lean_checked: bool = field(default=False, init=False, repr=False)
    _lean_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def _transport(self) -> _Connections | None:
        if not self._lean_checked:
            with self._lean_lock:
                if not self._lean_checked:
                    self._lean = _lean_transport(self.api_client)
                    self._lean_checked = True
        return self._lean

    def _serialize(
        self,
        method: str,
        path: str,
        query: Mapping[str, str | int | bool] | None,
        body: object | None,
        content_type: str,
    ) -> tuple[Any, ...]:
        query_params = _query_pairs(query)
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        return cast(
            tuple[Any, ...],
            self.api_client.param_serialize(
                method=method,
                resource_path=path,
                query_params=query_params or None,
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            ),
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int | bool] | None = None,
        body: object | None = None,
        content_type: str = "application/json",
        timeout_s: float | None = None,
        decode: bool = True,
    ) -> JsonDict:
        """Send one request; the decoded JSON answer, or KubeApiError for a non-2xx status.

        ``decode=False`` skips decoding a successful answer nobody reads (a created Event, a
        binding's Status) and returns {}.
        """
        lean = self._transport()
        if lean is not None:
            target = path
            if query:
                target += "?" + urllib.parse.urlencode(_query_pairs(query))
            headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
            payload = None
            if body is not None:
                headers["Content-Type"] = content_type
                payload = json.dumps(body, separators=(",", ":")).encode()
            status, data = lean.request(
                method, target, payload, headers, timeout_s or self.request_timeout_s
            )
        else:
            request = self._serialize(method, path, query, body, content_type)
            response = self.api_client.call_api(
                *request, _request_timeout=timeout_s or self.request_timeout_s
            )
            status, data = int(response.status), response.read()
        if not 200 <= status <= 299:
            raise _status_error(method, path, status, data)
        if not data or not decode:
            return {}
        decoded = json.loads(data)
        return decoded if isinstance(decoded, dict) else {}

    def stream_lines(
        self,
        path: str,
        query: Mapping[str, str | int | bool],
        timeout_s: float,
        on_open: Callable[[Any], None] | None = None,
    ) -> Iterator[JsonDict]:
        """A watch: one decoded JSON event per line until the server closes the stream.

        ``on_open`` receives the open urllib3 response, so another thread can ``shutdown()`` it
        to end a blocked read at once.
        """
        request = self._serialize("GET", path, query, None, "application/json")
        response = self.api_client.call_api(*request, _request_timeout=(10.0, timeout_s))
        raw = response.response
        if on_open is not None:
            on_open(raw)
        try:
            if not 200 <= int(response.status) <= 299:
                raise _status_error("GET", path, int(response.status), raw.data)
            pending = b""
            for chunk in raw.stream(amt=65536, decode_content=True):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
            if pending.strip():
                yield json.loads(pending)
        finally:
            raw.release_conn()

    def bind(self, namespace: str, pod_name: str, pod_uid: str, node_name: str) -> None:
        """POST pods/binding (UID-guarded, so a recreated pod of the same name is never bound).

        The generated ``create_namespaced_pod_binding`` is not used: it raises on the Status
        the server answers with unless called with ``_preload_content=False``, and in this
        client generation it also validates every argument through pydantic models, which cost
        more CPU than the rest of a scheduling cycle (profiled: ~2/3 of the bind worker's time).
        The Binding goes through the same ApiClient transport (auth, TLS, pool) as raw JSON, and
        only the status code is read.
        """
        body: JsonDict = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": pod_name, "namespace": namespace},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node_name},
        }
        if pod_uid:
            body["metadata"]["uid"] = pod_uid
        self.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/pods/{pod_name}/binding",
            body=body,
            decode=False,
        )
