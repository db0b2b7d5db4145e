"""The one Kubernetes API client: JSON requests and watches against one API server, and the
agent's calls by name.

Why not the official ``kubernetes`` package: importing it costs the agent about 30 MiB of
resident memory (its generated models, ``urllib3``, ``requests``, ``oauthlib``), on every GPU
node, for a handful of calls; and its model layer costs the scheduler more CPU per pod than a
scheduling cycle. Answers are plain JSON. The agent's calls keep the method names and keyword
arguments of ``kubernetes.client.CoreV1Api`` and ``CustomObjectsApi`` (``read_node``,
``patch_node``, ``get_cluster_custom_object``, ...), so the publisher takes either; the
scheduler's runtime wraps :meth:`KubeClient.request` and :meth:`KubeClient.stream_lines`
(``gputopo.scheduler.runtime.kube``). An error status raises :class:`KubeApiError`; no answer
raises :class:`KubeConnectionError`, an ``OSError``, which :mod:`gputopo.core.retry` retries.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final

from gputopo.core.kube.codec import STANDARD, JsonCodec
from gputopo.core.kube.config import ClusterConfig, load_config
from gputopo.core.kube.errors import KubeApiError
from gputopo.core.kube.transport import DEFAULT_TIMEOUT_S, HttpConnections, HttpStream

JsonDict = dict[str, Any]
Query = Mapping[str, str | int | bool]

MERGE_PATCH: Final = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH: Final = "application/strategic-merge-patch+json"
JSON_PATCH: Final = "application/json-patch+json"
APPLY_PATCH: Final = "application/apply-patch+yaml"
PATCH_TYPES: Final = frozenset({MERGE_PATCH, STRATEGIC_MERGE_PATCH, JSON_PATCH, APPLY_PATCH})
USER_AGENT: Final = "gputopo-agent"


class CachedAuthorization:
    """The Authorization header, fetched at most once per ``ttl_s`` (0: every time).

    Fetching reads a token file (bound tokens rotate) or runs an official-client configuration's
    refresh hook, which walks the whole environment for proxy variables: about 50 µs of CPU, on
    every bind and event. The in-cluster hook re-reads a rotated token file only once a minute
    anyway, so a second more of the old value changes nothing.
    """

    def __init__(
        self,
        fetch: Callable[[], str | None],
        ttl_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._ttl_s = ttl_s
        self._clock = clock
        self._cached: tuple[str | None, float] = (None, -float("inf"))

    def __call__(self) -> str | None:
        if self._ttl_s <= 0:
            return self._fetch()
        now = self._clock()
        value, expires = self._cached
        if now < expires:
            return value
        value = self._fetch()
        self._cached = (value, now + self._ttl_s)  # one tuple: threads see old or new, whole
        return value


def target(path: str, query: Query | None) -> str:
    """``path?query``; Kubernetes spells booleans in query strings lower-case."""
    if not query:
        return path
    pairs = [
        (key, str(value).lower() if isinstance(value, bool) else str(value))
        for key, value in query.items()
    ]
    return path + "?" + urllib.parse.urlencode(pairs)


def json_lines(chunks: Iterable[bytes], codec: JsonCodec = STANDARD) -> Iterator[JsonDict]:
    """One decoded JSON document per line, whatever chunk boundaries split the lines."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        if b"\n" not in chunk:
            continue
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                yield codec.loads(line)
    if pending.strip():
        yield codec.loads(pending)


class KubeClient:
    """One API server's JSON requests and watches over :class:`HttpConnections`; safe to share
    between threads.

    ``authorization`` replaces the bearer token of ``config`` (an official-client
    configuration's refresh hook); ``authorization_ttl_s`` caches the header that long (the
    scheduler: 1 s; the agent: 0, a token file is read for every request). ``codec`` reads and
    writes the JSON (`gputopo.core.kube.codec`; the standard library's by default).
    """

    def __init__(
        self,
        config: ClusterConfig,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        user_agent: str = USER_AGENT,
        authorization: Callable[[], str | None] | None = None,
        authorization_ttl_s: float = 0.0,
        codec: JsonCodec = STANDARD,
    ) -> None:
        self.config = config
        self.codec = codec
        self.timeout_s = timeout_s
        self.user_agent = user_agent
        https = urllib.parse.urlsplit(config.server).scheme == "https"
        self._http = HttpConnections(
            config.server,
            ssl_context=config.ssl_context() if https else None,
            tls_server_name=config.tls_server_name,
            timeout_s=timeout_s,
        )
        self._authorization = CachedAuthorization(
            authorization or self._bearer, authorization_ttl_s
        )

    def _bearer(self) -> str | None:
        token = self.config.bearer_token()  # a token file is re-read: bound tokens rotate
        return f"Bearer {token}" if token else None

    def close(self) -> None:
        """Close the kept-alive connections (open watches end on their own)."""
        self._http.close()

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": self.user_agent}
        authorization = self._authorization()
        if authorization:
            headers["Authorization"] = authorization
        return headers

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        query: Query | None = None,
        timeout_s: float | None = None,
        decode: bool = True,
    ) -> Any:
        """One call; the answer's JSON (None for an empty body, or with ``decode=False``: an
        answer nobody reads, a created Event or a binding's Status, is not decoded)."""
        headers = self._headers()
        payload = None
        if body is not None:
            payload = self.codec.dumps(body)
            headers["Content-Type"] = content_type
        status, reason, data = self._http.exchange(
            method, target(path, query), payload, headers, timeout_s or self.timeout_s
        )
        if not 200 <= status <= 299:
            raise KubeApiError(method, path, status, data, reason)
        return self.codec.loads(data) if data and decode else None

    def stream_lines(
        self,
        path: str,
        query: Query,
        timeout_s: float,
        on_open: Callable[[HttpStream], None] | None = None,
    ) -> Iterator[JsonDict]:
        """A watch: one decoded JSON event per line until the server closes the stream.

        ``on_open`` receives the open :class:`HttpStream`, so another thread can ``shutdown()``
        it to end a blocked read at once.
        """
        stream = self._http.open_stream("GET", target(path, query), self._headers(), timeout_s)
        if on_open is not None:
            on_open(stream)
        try:
            if not 200 <= stream.status <= 299:
                raise KubeApiError("GET", path, stream.status, stream.read(), stream.reason)
            yield from json_lines(stream.chunks(), self.codec)
        finally:
            stream.close()

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
