"""A stand-in for :class:`gputopo.core.kube.KubeClient` answering GETs from a dict of objects,
in pages of the size asked for, the way the API server answers (the integration tests use the
real one)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gputopo.core.kube import KubeApiError, KubeConnectionError

LISTS = {
    "/api/v1/nodes": "Node",
    "/api/v1/pods": "Pod",
    "/api/v1/namespaces": "Namespace",
    "/apis/scheduling.k8s.io/v1/priorityclasses": "PriorityClass",
}


class FakeApi:
    def __init__(self, objects: list[dict[str, Any]], *, status: int | None = None) -> None:
        self.objects = objects
        self.status = status  # answer every request with this error status
        self.unreachable = False
        self.queries: list[tuple[str, dict[str, Any]]] = []
        self.config: Any = None  # what KubeClient.config would be, where a test needs it

    def request(self, method: str, path: str, *, query: Mapping[str, Any] | None = None) -> Any:
        assert method == "GET"
        self.queries.append((path, dict(query or {})))
        if self.unreachable:
            raise KubeConnectionError(f"GET {path}: ConnectionRefusedError: refused")
        if self.status is not None:
            body = '{"kind":"Status","reason":"Forbidden","message":"pods is forbidden: no"}'
            raise KubeApiError("GET", path, self.status, body, "Forbidden")
        kind = LISTS.get(path)
        if kind is None:
            for obj in self.objects:
                if _path_of(obj) == path:
                    return {k: v for k, v in obj.items() if k != "kind"}
            raise KubeApiError("GET", path, 404, '{"reason":"NotFound","message":"not found"}')
        items = [
            {k: v for k, v in obj.items() if k != "kind"}
            for obj in self.objects
            if obj.get("kind") == kind and _selected(obj, (query or {}).get("fieldSelector", ""))
        ]
        start = int((query or {}).get("continue") or 0)
        limit = int((query or {}).get("limit") or len(items) or 1)
        page = items[start : start + limit]
        more = start + limit < len(items)
        return {"items": page, "metadata": {"continue": str(start + limit) if more else ""}}


def _path_of(obj: Mapping[str, Any]) -> str:
    meta = obj["metadata"]
    if obj["kind"] == "Pod":
        return f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
    return f"/api/v1/nodes/{meta['name']}"


def _selected(obj: Mapping[str, Any], selector: str) -> bool:
    """The two field selectors the plugin sends: phase and nodeName inequality."""
    for term in filter(None, selector.split(",")):
        field, _, value = term.partition("!=")
        if field == "status.phase" and obj.get("status", {}).get("phase") == value:
            return False
        if field == "spec.nodeName" and (obj.get("spec", {}).get("nodeName") or "") == value:
            return False
    return True
