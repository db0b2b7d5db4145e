"""kube-scheduler's extender wire format, `k8s.io/kube-scheduler/extender/v1`, read and checked.

Each request type is parsed into a frozen value; anything that is not what kube-scheduler sends
is an :class:`ExtenderArgsError` naming the field (the server answers it as a 400). Kept apart
from the verbs (:mod:`gputopo.scheduler.extender`) so the protocol can be read on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gputopo.scheduler.runtime.kube import JsonDict


class ExtenderArgsError(ValueError):
    """The request body is not an ExtenderArgs: the message names the field."""


@dataclass(frozen=True)
class ExtenderRequest:
    """An ExtenderArgs, validated: the pod and the candidate node names (with objects if sent)."""

    pod: JsonDict
    node_names: tuple[str, ...]
    nodes: Mapping[str, JsonDict] | None  # the caller's Node objects when it sent a NodeList

    @classmethod
    def from_json(cls, body: object) -> ExtenderRequest:
        if not isinstance(body, dict):
            raise ExtenderArgsError("ExtenderArgs: expected a JSON object")
        pod = body.get("Pod")
        if not isinstance(pod, dict) or not isinstance(pod.get("metadata"), dict):
            raise ExtenderArgsError("ExtenderArgs.Pod: expected a v1 Pod object")
        node_list = body.get("Nodes")
        names = body.get("NodeNames")
        if node_list is not None:
            items = node_list.get("items") if isinstance(node_list, dict) else None
            if not isinstance(items, list):
                raise ExtenderArgsError("ExtenderArgs.Nodes: expected a v1 NodeList with items")
            nodes: dict[str, JsonDict] = {}
            for index, item in enumerate(items):
                name = item.get("metadata", {}).get("name") if isinstance(item, dict) else None
                if not isinstance(name, str) or not name:
                    raise ExtenderArgsError(f"ExtenderArgs.Nodes.items[{index}]: no metadata.name")
                nodes[name] = item
            return cls(pod=pod, node_names=tuple(nodes), nodes=nodes)
        if names is None:
            raise ExtenderArgsError("ExtenderArgs: expected Nodes or NodeNames")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ExtenderArgsError("ExtenderArgs.NodeNames: expected a list of node names")
        return cls(pod=pod, node_names=tuple(names), nodes=None)


def _object(body: object, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ExtenderArgsError(f"{what}: expected a JSON object")
    return body


def _pod_of(body: Mapping[str, Any], what: str) -> JsonDict:
    pod = body.get("Pod")
    if not isinstance(pod, dict) or not isinstance(pod.get("metadata"), dict):
        raise ExtenderArgsError(f"{what}.Pod: expected a v1 Pod object")
    return pod


@dataclass(frozen=True)
class PreemptionRequest:
    """An ExtenderPreemptionArgs: per candidate node, the victims' UIDs and PDB violations."""

    pod: JsonDict
    victims: Mapping[str, tuple[tuple[str, ...], int]]

    @classmethod
    def from_json(cls, body: object) -> PreemptionRequest:
        args = _object(body, "ExtenderPreemptionArgs")
        pod = _pod_of(args, "ExtenderPreemptionArgs")
        meta, full = args.get("NodeNameToMetaVictims"), args.get("NodeNameToVictims")
        field_name = "NodeNameToMetaVictims" if meta is not None else "NodeNameToVictims"
        per_node = meta if meta is not None else full
        if per_node is None:
            per_node = {}
        where = f"ExtenderPreemptionArgs.{field_name}"
        if not isinstance(per_node, dict):
            raise ExtenderArgsError(f"{where}: expected an object of node name to victims")
        victims: dict[str, tuple[tuple[str, ...], int]] = {}
        for node, entry in per_node.items():
            entry = _object(entry, f"{where}[{node}]")
            pods = entry.get("Pods") or []
            if not isinstance(pods, list):
                raise ExtenderArgsError(f"{where}[{node}].Pods: expected a list")
            uids: list[str] = []
            for index, victim in enumerate(pods):
                victim = _object(victim, f"{where}[{node}].Pods[{index}]")
                uid = (
                    victim.get("UID") if meta is not None else victim.get("metadata", {}).get("uid")
                )
                if not isinstance(uid, str) or not uid:
                    name = "UID" if meta is not None else "metadata.uid"
                    raise ExtenderArgsError(f"{where}[{node}].Pods[{index}].{name}: expected a UID")
                uids.append(uid)
            violations = entry.get("NumPDBViolations") or 0
            if not isinstance(violations, int):
                raise ExtenderArgsError(f"{where}[{node}].NumPDBViolations: expected an integer")
            victims[str(node)] = (tuple(uids), violations)
        return cls(pod=pod, victims=victims)


@dataclass(frozen=True)
class BindingRequest:
    """An ExtenderBindingArgs."""

    name: str
    namespace: str
    uid: str
    node: str

    @classmethod
    def from_json(cls, body: object) -> BindingRequest:
        args = _object(body, "ExtenderBindingArgs")
        values: dict[str, str] = {}
        for field_name in ("PodName", "PodNamespace", "PodUID", "Node"):
            value = args.get(field_name)
            if not isinstance(value, str) or not value:
                raise ExtenderArgsError(f"ExtenderBindingArgs.{field_name}: expected a string")
            values[field_name] = value
        return cls(values["PodName"], values["PodNamespace"], values["PodUID"], values["Node"])
