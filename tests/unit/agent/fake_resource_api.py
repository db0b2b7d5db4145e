"""In-memory stand-ins for the API the agent's device-taint and Node writers call:
resource.k8s.io/v1 (ResourceSlices listed by field selector; DeviceTaintRules listed, created,
merge-patched with resourceVersion checks, deleted) and one Node."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from gputopo.core.kube import KubeApiError

RULES = "/apis/resource.k8s.io/v1/devicetaintrules"
SLICES = "/apis/resource.k8s.io/v1/resourceslices"


def merge(target: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


class FakeResourceApi:
    """resource.k8s.io/v1 as the writer uses it: list slices by field selector, list/create/
    merge-patch/delete DeviceTaintRules with resourceVersion checks."""

    def __init__(self, slices: list[dict[str, Any]], *, served: bool = True) -> None:
        self.slices = slices
        self.served = served
        self.rules: dict[str, dict[str, Any]] = {}
        self.writes: list[tuple[str, str]] = []
        self.version = 0
        self.conflict_next_patch = False

    def _bump(self, rule: dict[str, Any]) -> None:
        self.version += 1
        rule["metadata"]["resourceVersion"] = str(self.version)

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        query: Mapping[str, Any] | None = None,
    ) -> Any:
        if not self.served:
            raise KubeApiError(method, path, 404, json.dumps({"reason": "NotFound"}))
        query = query or {}
        if method == "GET" and path == SLICES:
            fields = dict(part.split("=") for part in str(query["fieldSelector"]).split(","))
            return {
                "items": [
                    s
                    for s in self.slices
                    if s["spec"]["nodeName"] == fields["spec.nodeName"]
                    and s["spec"]["driver"] == fields["spec.driver"]
                ]
            }
        if method == "GET" and path == RULES:
            key, _, value = str(query["labelSelector"]).partition("=")
            return {
                "items": [
                    copy.deepcopy(r)
                    for r in self.rules.values()
                    if r["metadata"].get("labels", {}).get(key) == value
                ]
            }
        name = path.rpartition("/")[2]
        self.writes.append((method, name if method != "POST" else body["metadata"]["name"]))
        if method == "POST":
            rule = copy.deepcopy(body)
            if rule["metadata"]["name"] in self.rules:
                raise KubeApiError(method, path, 409, json.dumps({"reason": "AlreadyExists"}))
            self._bump(rule)
            self.rules[rule["metadata"]["name"]] = rule
            return rule
        if name not in self.rules:
            raise KubeApiError(method, path, 404, json.dumps({"reason": "NotFound"}))
        rule = self.rules[name]
        if method == "DELETE":
            del self.rules[name]
            return {}
        wanted = body["metadata"].get("resourceVersion")
        if self.conflict_next_patch or wanted != rule["metadata"]["resourceVersion"]:
            self.conflict_next_patch = False
            self._bump(rule)  # someone else wrote it in between
            raise KubeApiError(method, path, 409, json.dumps({"reason": "Conflict"}))
        patch = copy.deepcopy(body)
        patch["metadata"].pop("resourceVersion", None)
        merge(rule, patch)
        self._bump(rule)
        return rule


class FakeNodeApi:
    """One Node: read it, merge-patch it."""

    def __init__(self, name: str) -> None:
        self.node: dict[str, Any] = {
            "metadata": {"name": name, "resourceVersion": "1"},
            "spec": {},
        }

    def read_node(self, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.node)

    def patch_node(self, name: str, body: Any, **_: Any) -> Any:
        patch = copy.deepcopy(body)
        patch["metadata"].pop("resourceVersion", None)
        merge(self.node, patch)
        version = int(self.node["metadata"]["resourceVersion"]) + 1
        self.node["metadata"]["resourceVersion"] = str(version)
        return self.node

    def taint_keys(self) -> set[str]:
        return {t["key"] for t in self.node["spec"].get("taints") or ()}
