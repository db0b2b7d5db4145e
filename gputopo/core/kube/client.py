"""The agent's Kubernetes calls: its Node and its NodeResourceTopology, as JSON dicts.

Why not the official ``kubernetes`` package: importing it costs the agent about 30 MiB of
resident memory (its generated models, ``urllib3``, ``requests``, ``oauthlib``), on every GPU
node, for a handful of calls. Method names and keyword arguments are those of
``kubernetes.client.CoreV1Api`` and ``CustomObjectsApi`` (``read_node``, ``patch_node``,
``get_cluster_custom_object``, ...), so the publisher takes either; answers are plain JSON
dicts. An error status raises :class:`KubeApiError`; no answer raises
:class:`KubeConnectionError`, an ``OSError``, which the publisher retries
(:mod:`gputopo.core.retry`).
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from typing import Any, Final

from gputopo.core.kube.config import ClusterConfig, load_config
from gputopo.core.kube.errors import KubeApiError
from gputopo.core.kube.transport import DEFAULT_TIMEOUT_S, HttpConnections

MERGE_PATCH: Final = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH: Final = "application/strategic-merge-patch+json"
JSON_PATCH: Final = "application/json-patch+json"
APPLY_PATCH: Final = "application/apply-patch+yaml"
PATCH_TYPES: Final = frozenset({MERGE_PATCH, STRATEGIC_MERGE_PATCH, JSON_PATCH, APPLY_PATCH})
USER_AGENT: Final = "gputopo-agent"


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
            raise KubeApiError(method, path, status, data, reason)
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
