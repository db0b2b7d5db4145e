"""The scheduler's JSON-dict layer over the API server.

The runtime works on Kubernetes JSON dicts (the scheduler core's currency). Where and how to
connect is the ground floor's one kubeconfig policy (:func:`gputopo.core.kube.load_config`:
kubeconfig and context, in-cluster ServiceAccount with rotating tokens, TLS), the same as the
agent's: exec plugins, auth providers, basic auth and proxies are refused in one line, never
handed to the official client. Requests skip the official client's model layer entirely:
deserialisation is slow on the hot path and the generated models reformat MicroTime fields.

One-shot requests (binds, events, status patches: two or three per scheduled pod) go through
:class:`gputopo.core.kube.HttpConnections`, kept-alive connections speaking HTTP/1.1 directly
on the TLS socket. Measured per request (``reqbench``, tests/bench/test_request_bench.py): the
official client's ``call_api`` about 0.7 ms of CPU, urllib3 alone 0.38-0.53 ms, this transport
with the Authorization header cached for a second 0.13-0.18 ms: CPU taken from the scheduling
loop under the GIL (docs/performance.md, "The HTTP client"). Watches stream over dedicated
connections of the same transport (``HttpConnections.open_stream``; lines split in
:func:`_json_lines`): the Pod watch carries about three events per scheduled pod.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from gputopo.core.kube import (
    ClusterConfig,
    HttpConnections,
    HttpStream,
    KubeApiError,
    KubeConfigError,
    load_config,
)

__all__ = ["JsonDict", "KubeApi", "KubeApiError", "load_kube_api"]

JsonDict = dict[str, Any]
USER_AGENT = "gputopo-scheduler"


def load_kube_api(kubeconfig: str | None, *, context: str | None = None) -> KubeApi:
    """A KubeApi from --kubeconfig (and --context), the in-cluster ServiceAccount,
    $KUBECONFIG, or ~/.kube/config: the agent's rule (:func:`gputopo.core.kube.load_config`).

    Raises :class:`KubeConfigError` (a ValueError), one line naming the source, for a
    configuration it cannot read or will not use.
    """
    try:
        return KubeApi.from_cluster_config(load_config(kubeconfig, context=context))
    except KubeConfigError as error:
        if kubeconfig:
            raise KubeConfigError(f"kubeconfig {kubeconfig!r}", error.detail) from None
        raise


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


def _official_client_transport(api_client: Any) -> tuple[HttpConnections, CachedAuthorization]:
    """The transport and Authorization for an official-client ``ApiClient``'s configuration
    (the test harness holds those): the same server, TLS and credentials, sent the same way.
    A proxy or basic auth is refused, as :func:`load_kube_api` refuses them."""
    configuration = api_client.configuration
    if configuration.proxy or configuration.username:
        what = "a proxy" if configuration.proxy else "basic authentication"
        raise KubeConfigError(f"API client for {configuration.host}", f"{what} is not supported")
    https = urllib.parse.urlsplit(str(configuration.host)).scheme == "https"
    http = HttpConnections(
        str(configuration.host),
        ssl_context=_ssl_context(configuration) if https else None,
        tls_server_name=configuration.tls_server_name or None,
    )
    return http, CachedAuthorization(lambda: _authorization(configuration))


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
    """JSON requests against one API server: built by :func:`load_kube_api` (or
    :meth:`from_cluster_config`); ``KubeApi(api_client)`` borrows the server and credentials of
    an official-client ``ApiClient`` instead."""

    api_client: Any = None
    request_timeout_s: float = 30.0
    _http: HttpConnections | None = field(default=None, init=False, repr=False)
    _authorization: CachedAuthorization | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def from_cluster_config(
        cls,
        config: ClusterConfig,
        *,
        request_timeout_s: float = 30.0,
        authorization_ttl_s: float = AUTHORIZATION_TTL_S,
    ) -> KubeApi:
        """Requests and watches for a configuration read by the ground floor's loader."""
        api = cls(request_timeout_s=request_timeout_s)
        https = urllib.parse.urlsplit(config.server).scheme == "https"
        api._http = HttpConnections(
            config.server,
            ssl_context=config.ssl_context() if https else None,
            tls_server_name=config.tls_server_name,
        )

        def bearer() -> str | None:
            token = config.bearer_token()  # a token file is re-read: bound tokens rotate
            return f"Bearer {token}" if token else None

        api._authorization = CachedAuthorization(bearer, authorization_ttl_s)
        return api

    def _transport(self) -> tuple[HttpConnections, CachedAuthorization]:
        http, authorization = self._http, self._authorization
        if http is None or authorization is None:
            with self._lock:
                if self._http is None or self._authorization is None:
                    if self.api_client is None:
                        raise ValueError("KubeApi: no API server configured (use load_kube_api)")
                    self._http, self._authorization = _official_client_transport(self.api_client)
                http, authorization = self._http, self._authorization
        assert http is not None and authorization is not None
        return http, authorization

    def close(self) -> None:
        """Close the kept-alive connections (open watches end on their own)."""
        if self._http is not None:
            self._http.close()

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
        http, authorization = self._transport()
        headers = _headers(authorization())
        payload = None
        if body is not None:
            headers["Content-Type"] = content_type
            payload = json.dumps(body, separators=(",", ":")).encode()
        status, reason, data = http.exchange(
            method, _target(path, query), payload, headers, timeout_s or self.request_timeout_s
        )
        if not 200 <= status <= 299:
            raise KubeApiError(method, path, status, data, reason)
        if not data or not decode:
            return {}
        decoded = json.loads(data)
        return decoded if isinstance(decoded, dict) else {}

    def stream_lines(
        self,
        path: str,
        query: Mapping[str, str | int | bool],
        timeout_s: float,
        on_open: Callable[[HttpStream], None] | None = None,
    ) -> Iterator[JsonDict]:
        """A watch: one decoded JSON event per line until the server closes the stream.

        ``on_open`` receives the open :class:`HttpStream`, so another thread can ``shutdown()``
        it to end a blocked read at once.
        """
        http, authorization = self._transport()
        stream = http.open_stream("GET", _target(path, query), _headers(authorization()), timeout_s)
        if on_open is not None:
            on_open(stream)
        try:
            if not 200 <= stream.status <= 299:
                raise KubeApiError("GET", path, stream.status, stream.read(), stream.reason)
            yield from _json_lines(stream.chunks())
        finally:
            stream.close()

    def bind(self, namespace: str, pod_name: str, pod_uid: str, node_name: str) -> None:
        """POST pods/binding (UID-guarded, so a recreated pod of the same name is never bound).

        The generated ``create_namespaced_pod_binding`` is not used: it raises on the Status
        the server answers with unless called with ``_preload_content=False``, and in this
        client generation it also validates every argument through pydantic models, which cost
        more CPU than the rest of a scheduling cycle (profiled: ~2/3 of the bind worker's time).
        The Binding goes through the same transport (auth, TLS, pool) as raw JSON, and only the
        status code is read.
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
