"""The scheduler's view of the API server: JSON dicts in and out, and the binding POST.

The runtime works on Kubernetes JSON dicts (the scheduler core's currency). Everything below
is the ground floor's one API client (:class:`gputopo.core.kube.KubeClient`): where and how to
connect is its one kubeconfig policy (:func:`gputopo.core.kube.load_config`: kubeconfig and
context, in-cluster ServiceAccount with rotating tokens, TLS), the same as the agent's: exec
plugins, auth providers, basic auth and proxies are refused in one line, never handed to the
official client. Requests skip the official client's model layer entirely: deserialisation is
slow on the hot path and the generated models reformat MicroTime fields.

One-shot requests (binds, events, status patches: two or three per scheduled pod) go through
kept-alive connections speaking HTTP/1.1 directly on the TLS socket, the Authorization header
cached for a second. Measured per request (``reqbench``, tests/bench/test_request_bench.py): the
official client's ``call_api`` about 0.7 ms of CPU, urllib3 alone 0.38-0.53 ms, this transport
0.13-0.18 ms: CPU taken from the scheduling loop under the GIL (docs/performance.md, "The HTTP
client"). Watches stream over dedicated connections of the same transport: the Pod watch
carries about three events per scheduled pod.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from gputopo.core.kube import (
    ClusterConfig,
    HttpStream,
    KubeApiError,
    KubeClient,
    KubeConfigError,
    load_config,
)
from gputopo.core.kube.client import JsonDict, Query
from gputopo.core.kube.codec import JsonCodec

__all__ = ["AUTHORIZATION_TTL_S", "JsonDict", "KubeApi", "KubeApiError", "load_kube_api"]

USER_AGENT = "gputopo-scheduler"
AUTHORIZATION_TTL_S = 1.0
REQUEST_TIMEOUT_S = 30.0
# The scheduler's JSON: orjson (its extra) decodes a pod's watch event in about 8 µs against the
# standard library's 21 and encodes the binding and event bodies likewise faster; the values are
# the same (tests/unit/scheduler/runtime/test_kube_codec.py).
FAST_JSON = JsonCodec(orjson.loads, orjson.dumps)


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


def _official_client(api_client: Any) -> KubeClient:
    """The client for an official-client ``ApiClient``'s configuration (the test harness holds
    those): the same server, TLS and credentials, its refresh hook run for the token (in-cluster
    bound tokens rotate). A proxy or basic auth is refused, as :func:`load_kube_api` refuses
    them."""
    configuration = api_client.configuration
    source = f"API client for {configuration.host}"
    if configuration.proxy or configuration.username:
        what = "a proxy" if configuration.proxy else "basic authentication"
        raise KubeConfigError(source, f"{what} is not supported")
    config = ClusterConfig(
        server=str(configuration.host),
        source=source,
        ca_file=configuration.ssl_ca_cert or None,
        insecure_skip_tls_verify=not configuration.verify_ssl,
        tls_server_name=configuration.tls_server_name or None,
        client_cert_file=configuration.cert_file or None,
        client_key_file=configuration.key_file or None,
    )
    return KubeClient(
        config,
        timeout_s=REQUEST_TIMEOUT_S,
        user_agent=USER_AGENT,
        authorization=lambda: _authorization(configuration),
        authorization_ttl_s=AUTHORIZATION_TTL_S,
        codec=FAST_JSON,
    )


def _authorization(configuration: Any) -> str | None:
    """The Authorization header the official client would send (its refresh hook runs)."""
    auth = configuration.auth_settings().get("BearerToken")
    return str(auth["value"]) if auth and auth.get("value") else None


class KubeApi:
    """JSON requests against one API server: built by :func:`load_kube_api` (or
    :meth:`from_cluster_config`); ``KubeApi(api_client)`` borrows the server and credentials of
    an official-client ``ApiClient`` instead (connected on first use)."""

    def __init__(self, api_client: Any = None, *, client: KubeClient | None = None) -> None:
        self.api_client = api_client
        self._client = client
        self._lock = threading.Lock()

    @classmethod
    def from_cluster_config(
        cls,
        config: ClusterConfig,
        *,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        authorization_ttl_s: float = AUTHORIZATION_TTL_S,
    ) -> KubeApi:
        """Requests and watches for a configuration read by the ground floor's loader."""
        client = KubeClient(
            config,
            timeout_s=request_timeout_s,
            user_agent=USER_AGENT,
            authorization_ttl_s=authorization_ttl_s,
            codec=FAST_JSON,
        )
        return cls(client=client)

    @property
    def client(self) -> KubeClient:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    if self.api_client is None:
                        raise ValueError("KubeApi: no API server configured (use load_kube_api)")
                    self._client = _official_client(self.api_client)
                client = self._client
        return client

    def close(self) -> None:
        """Close the kept-alive connections (open watches end on their own)."""
        if self._client is not None:
            self._client.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Query | None = None,
        body: object | None = None,
        content_type: str = "application/json",
        timeout_s: float | None = None,
        decode: bool = True,
    ) -> JsonDict:
        """Send one request; the decoded JSON answer, or KubeApiError for a non-2xx status.

        ``decode=False`` skips decoding a successful answer nobody reads (a created Event, a
        binding's Status) and returns {}.
        """
        answer = self.client.request(
            method,
            path,
            query=query,
            body=body,
            content_type=content_type,
            timeout_s=timeout_s,
            decode=decode,
        )
        return answer if isinstance(answer, dict) else {}

    def stream_lines(
        self,
        path: str,
        query: Query,
        timeout_s: float,
        on_open: Callable[[HttpStream], None] | None = None,
    ) -> Iterator[JsonDict]:
        """A watch: one decoded JSON event per line until the server closes the stream
        (:meth:`gputopo.core.kube.KubeClient.stream_lines`)."""
        return self.client.stream_lines(path, query, timeout_s, on_open)

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
