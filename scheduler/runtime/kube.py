"""A thin JSON-dict layer over the API server.

The runtime works on Kubernetes JSON dicts (the scheduler core's currency). Where and how to
connect (kubeconfig, in-cluster ServiceAccount with rotating tokens, TLS) is read by the agent's
loader, ``agent.kubeapi.load_config``, or, for what only it understands, the official client's
``Configuration``; either way requests skip the official client's model layer: deserialisation
is slow on the hot path and the generated models reformat MicroTime fields.

One-shot requests (binds, events, status patches: two or three per scheduled pod) go through
``agent.kubeapi.HttpConnections``, the agent's pool of kept-alive connections speaking HTTP/1.1
directly on the TLS socket. Measured, the client's ``call_api`` and urllib3 cost about 0.7 ms of
CPU per request, ``http.client`` 0.3 ms, this transport with the Authorization header cached
for a second 0.12-0.16 ms (``reqbench``: GETs and Event POSTs against a real API server): CPU
taken from the scheduling loop under the GIL. Watches stream over dedicated connections of the
same transport (``HttpConnections.open_stream``; lines split in :func:`_json_lines`): the Pod
watch carries about three events per scheduled pod. Configurations the lean path does not speak
(an HTTP proxy, basic auth) use the official ApiClient for everything, watches included.
"""

from __future__ import annotations

import json
import os
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from gputopo.core.kubeapi import ClusterConfig, HttpConnections, KubeConfigError, load_config

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


def load_kube_api(kubeconfig: str | None, context: str | None = None) -> KubeApi:
    """A KubeApi from --kubeconfig, the in-cluster ServiceAccount, $KUBECONFIG, or ~/.kube.

    Read by the agent's own loader (``agent.kubeapi.load_config``: tokens, token files, client
    certificates, CAs) where it can, so the common cases never import the official client
    (about 0.1 s of start-up). Whatever it refuses (exec plugins, auth providers, proxies, basic
    auth, a $KUBECONFIG list to merge) or cannot read goes to the official client's loaders,
    whose error is the one reported. Raises ValueError naming the source when none works.
    """
    merged = os.pathsep in os.environ.get("KUBECONFIG", "").strip(os.pathsep)
    if kubeconfig or os.environ.get("KUBERNETES_SERVICE_HOST") or not merged:
        try:
            return KubeApi.from_cluster_config(load_config(kubeconfig, context=context))
        except KubeConfigError:
            pass
    return KubeApi(load_api_client(kubeconfig, context))


def load_api_client(kubeconfig: str | None, context: str | None = None) -> Any:
    """An ApiClient from --kubeconfig, $KUBECONFIG, the in-cluster ServiceAccount, or ~/.kube.

    Raises ValueError naming the source when none works.
    """
    # Imported here: start-up time that the common configurations never pay.
    import kubernetes.client
    import kubernetes.config

    configuration = kubernetes.client.Configuration()
    loader: Any = kubernetes.config  # its loaders are untyped
    try:
        if kubeconfig:
            loader.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            loader.load_incluster_config(client_configuration=configuration)
        else:
            loader.load_kube_config(context=context, client_configuration=configuration)
    except (kubernetes.config.ConfigException, OSError, TypeError) as err:
        source = kubeconfig or os.environ.get("KUBECONFIG") or "in-cluster/~/.kube/config"
        raise ValueError(
            f"kubeconfig {source!r}: cannot load a client configuration: {err}"
        ) from err
    # Four long-lived watches plus bind and event workers: a pool too small for them makes
    # urllib3 open (and TLS-handshake) a fresh connection per request.
    configuration.connection_pool_maxsize = 32
    return kubernetes.client.ApiClient(configuration)


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


def _query_pairs(query: Mapping[str, str | int | bool] | None) -> list[tuple[str, str]]:
    """Kubernetes spells booleans in query strings lower-case."""
    return [
        (key, str(value).lower() if isinstance(value, bool) else str(value))
        for key, value in (query or {}).items()
    ]


def _lean_transport(api_client: Any) -> HttpConnections | None:
    configuration = getattr(api_client, "configuration", None)
    if configuration is None or configuration.proxy or configuration.username:
        return None
    https = urllib.parse.urlsplit(str(configuration.host)).scheme == "https"
    return HttpConnections(
        str(configuration.host),
        ssl_context=_ssl_context(configuration) if https else None,
        tls_server_name=configuration.tls_server_name or None,
    )


def _authorization(configuration: Any) -> str | None:
    """The Authorization header the client would send (its refresh hook runs: in-cluster
    bound tokens rotate)."""
    auth = configuration.auth_settings().get("BearerToken")
    return str(auth["value"]) if auth and auth.get("value") else None


AUTHORIZATION_TTL_S = 1.0


class CachedAuthorization:
    """The Authorization header, fetched at most once per ``ttl_s``.

    From an official-client configuration, fetching runs its refresh hook, and through it
    ``Configuration.host``, which walks the whole environment for proxy variables: about 50 µs
    of CPU, on every bind and event. From a token file it is a file read. The in-cluster hook
    re-reads a rotated token file only once a minute anyway, so a second more of the old
    value changes nothing.
    """

    def __init__(
        self,
        fetch: Callable[[], str | None],
        ttl_s: float = AUTHORIZATION_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._ttl_s = ttl_s
        self._clock = clock
        self._cached: tuple[str | None, float] = (None, -float("inf"))

    def __call__(self) -> str | None:
        now = self._clock()
        value, expires = self._cached
        if now < expires:
            return value
        value = self._fetch()
        self._cached = (value, now + self._ttl_s)  # one tuple: threads see old or new, whole
        return value


def _target(path: str, query: Mapping[str, str | int | bool] | None) -> str:
    return path + "?" + urllib.parse.urlencode(_query_pairs(query)) if query else path


def _headers(authorization: str | None) -> dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    if authorization:
        headers["Authorization"] = authorization
    return headers


def _json_lines(chunks: Iterable[bytes]) -> Iterator[JsonDict]:
    """One decoded JSON document per line, whatever chunk boundaries split the lines."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        if b"\n" not in chunk:
            continue
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                yield json.loads(line)
    if pending.strip():
        yield json.loads(pending)


@dataclass
class KubeApi:
    """JSON requests against one API server, configured by an official-client ApiClient or,
    without one, by :meth:`from_cluster_config`."""

    api_client: Any
    request_timeout_s: float = 30.0
    _lean: HttpConnections | None = field(default=None, init=False, repr=False)
    _authorization: CachedAuthorization | None = field(default=None, init=False, repr=False)
    _lean_checked: bool = field(default=False, init=False, repr=False)
    _lean_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def from_cluster_config(
        cls,
        config: ClusterConfig,
        *,
        request_timeout_s: float = 30.0,
        authorization_ttl_s: float = AUTHORIZATION_TTL_S,
    ) -> KubeApi:
        """Requests and watches over the lean transport only, without the official client."""
        api = cls(api_client=None, request_timeout_s=request_timeout_s)
        https = urllib.parse.urlsplit(config.server).scheme == "https"
        api._lean = HttpConnections(
            config.server,
            ssl_context=config.ssl_context() if https else None,
            tls_server_name=config.tls_server_name,
        )

        def bearer() -> str | None:
            token = config.bearer_token()  # a token file is re-read: bound tokens rotate
            return f"Bearer {token}" if token else None

        api._authorization = CachedAuthorization(bearer, authorization_ttl_s)
        api._lean_checked = True
        return api

    def _transport(self) -> HttpConnections | None:
        if not self._lean_checked:
            with self._lean_lock:
                if not self._lean_checked:
                    self._lean = _lean_transport(self.api_client)
                    if self._lean is not None:
                        configuration = self.api_client.configuration
                        self._authorization = CachedAuthorization(
                            lambda: _authorization(configuration)
                        )
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
        if lean is not None and self._authorization is not None:
            target = _target(path, query)
            headers = _headers(self._authorization())
            payload = None
            if body is not None:
                headers["Content-Type"] = content_type
                payload = json.dumps(body, separators=(",", ":")).encode()
            status, _, data = lean.exchange(
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

        ``on_open`` receives the open response (an ``agent.kubeapi.HttpStream``, or urllib3's
        where the ApiClient carries the watch), so another thread can ``shutdown()`` it to end
        a blocked read at once.
        """
        lean = self._transport()
        if lean is not None and self._authorization is not None:
            stream = lean.open_stream(
                "GET", _target(path, query), _headers(self._authorization()), timeout_s
            )
            if on_open is not None:
                on_open(stream)
            try:
                if not 200 <= stream.status <= 299:
                    raise _status_error("GET", path, stream.status, stream.read())
                yield from _json_lines(stream.chunks())
            finally:
                stream.close()
            return
        request = self._serialize("GET", path, query, None, "application/json")
        response = self.api_client.call_api(*request, _request_timeout=(10.0, timeout_s))
        raw = response.response
        if on_open is not None:
            on_open(raw)
        try:
            if not 200 <= int(response.status) <= 299:
                raise _status_error("GET", path, int(response.status), raw.data)
            yield from _json_lines(raw.stream(amt=65536, decode_content=True))
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
