"""Every item of a Kubernetes list, read in pages (``limit``/``continue``, as kubectl reads).

A list's items lack ``kind``; each item comes back with it set, so the readers that take YAML
(the scheduler's ``cluster_from_objects``) take live objects the same way. Errors are the
client's own (:class:`~gputopo.core.kube.errors.KubeApiError`,
:class:`~gputopo.core.kube.errors.KubeConnectionError`): each caller says what it was reading.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final, Protocol

from gputopo.core.kube.client import Query

PAGE_SIZE: Final = 500

# Pods that hold or want resources: a finished pod holds none, as the scheduler's cache has it.
RUNNING_PODS: Final = "status.phase!=Succeeded,status.phase!=Failed"


class Requester(Protocol):
    """What a lister needs: ``KubeClient`` and the scheduler's ``KubeApi`` both have it."""

    def request(self, method: str, path: str, *, query: Query | None = None) -> Any: ...


def list_items(
    client: Requester, path: str, kind: str, query: Query | None = None
) -> Iterator[dict[str, Any]]:
    """Every item of the list at ``path``, page by page, each with its ``kind`` set."""
    token = ""
    while True:
        page_query: dict[str, str | int | bool] = dict(query or {})
        page_query["limit"] = PAGE_SIZE
        if token:
            page_query["continue"] = token
        page: Mapping[str, Any] = client.request("GET", path, query=page_query) or {}
        for item in page.get("items") or []:
            yield {"kind": kind, **item}
        token = str((page.get("metadata") or {}).get("continue") or "")
        if not token:
            return
