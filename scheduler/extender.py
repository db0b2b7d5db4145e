"""gputopo as a kube-scheduler extender: `filter`, `prioritize`, `preempt`, `bind` over HTTP JSON.

kube-scheduler keeps scheduling (its own filters, scores, preemption and binding) and asks
gputopo about the nodes that passed its filters. The wire format is
`k8s.io/kube-scheduler/extender/v1` with Go's field names: `ExtenderArgs` {`Pod`, `Nodes`,
`NodeNames`} in, `ExtenderFilterResult` {`Nodes`, `NodeNames`, `FailedNodes`,
`FailedAndUnresolvableNodes`, `Error`} or a `HostPriorityList` [{`Host`, `Score`}] out;
`ExtenderPreemptionArgs` {`Pod`, `NodeNameToVictims` | `NodeNameToMetaVictims`} in,
`ExtenderPreemptionResult` {`NodeNameToMetaVictims`} out (the candidate nodes where gputopo's
filters pass once the victims are gone); `ExtenderBindingArgs` {`PodName`, `PodNamespace`,
`PodUID`, `Node`} in, `ExtenderBindingResult` {`Error`} out (the binding is made by the
extender, UID-guarded).

The extender always keeps its own cache of Nodes, Pods and Namespaces (list+watch, the same
informers and ClusterSnapshot the `run` runtime uses), so `nodeCacheCapable: true` works and a
request costs one scheduling cycle on the cache, not a re-parse of a NodeList. Without
`nodeCacheCapable`, the `Nodes` list only names the candidates; their objects come from the
cache too, and the answer returns the caller's Node objects that passed.

Each request runs the configured profile's full cycle (`schedule_one`) and reads the verdicts of
the candidate nodes out of its diagnosis, so whatever filters and scores the profile enables are
what the extender applies.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from gputopo.core.documents import load_json
from gputopo.core.serve import Probes, ProbeServer, check, parse_address
from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.framework import NodeDiagnosis, schedule_one
from gputopo.scheduler.model import parse_pod
from gputopo.scheduler.plugins import headroom
from gputopo.scheduler.runtime.cache import ClusterCache, is_terminal, node_name_of
from gputopo.scheduler.runtime.core_adapter import CoreFramework
from gputopo.scheduler.runtime.informer import Reflector
from gputopo.scheduler.runtime.kube import JsonDict, KubeApi

log = logging.getLogger("gputopo.scheduler.extender")

MIN_EXTENDER_PRIORITY: Final = 0
MAX_EXTENDER_PRIORITY: Final = 10

NOT_IN_CACHE_REASON: Final = "node(s) not yet in gputopo's cache"
VERBS: Final = ("filter", "prioritize", "preempt", "bind")

NODES_PATH: Final = "/api/v1/nodes"
PODS_PATH: Final = "/api/v1/pods"
NAMESPACES_PATH: Final = "/api/v1/namespaces"


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


Binder = Callable[[str, str, str, str], None]  # (namespace, name, uid, node): KubeApi.bind


@dataclass(frozen=True)
class _Verdicts:
    """One cycle's outcome for the candidate nodes only."""

    diagnosis: Mapping[str, NodeDiagnosis]
    refusal: str | None  # the whole pod was refused (gated, unparsable, no nodes...)


class Extender:
    """The two verbs on a ``CoreFramework`` whose snapshot a watch keeps current.

    ``lock`` is the lock the watch holds while it writes the snapshot (the ClusterCache's).
    """

    def __init__(
        self,
        framework: CoreFramework,
        lock: threading.RLock | None = None,
        binder: Binder | None = None,
    ) -> None:
        self.framework = framework
        self.lock = lock or threading.RLock()
        self.binder = binder
        self._last: tuple[tuple[str, str, int], _Verdicts] | None = None

    def _evaluate(self, request: ExtenderRequest) -> _Verdicts:
        """One cycle; reused by the prioritize that follows a filter for the same pod version
        while the cache has not changed (kube-scheduler calls both for every pod)."""
        meta = request.pod.get("metadata", {})
        uid, version = str(meta.get("uid") or ""), str(meta.get("resourceVersion") or "")
        with self.lock:
            snapshot = self.framework.snapshot
            key = (uid, version, snapshot.generation)
            last = self._last
            if uid and version and last is not None and last[0] == key:
                return last[1]
            try:
                pod = parse_pod(request.pod)
            except SchedulerInputError as err:
                return _Verdicts({}, str(err))
            result = schedule_one(pod, snapshot, self.framework.profile)
            diagnosis = result.diagnosis()
            if not diagnosis and result.message:
                verdicts = _Verdicts({}, result.message)
            else:
                verdicts = _Verdicts(diagnosis, None)
            self._last = (key, verdicts)
            return verdicts

    def filter(self, request: ExtenderRequest) -> JsonDict:
        """ExtenderFilterResult for ``request``: passing nodes, and why each other one failed."""
        verdicts = self._evaluate(request)
        passed: list[str] = []
        failed: dict[str, str] = {}
        unresolvable: dict[str, str] = {}
        kept: list[str] = []  # failed only the headroom rule, which judged all nodes we know
        for name in request.node_names:
            if verdicts.refusal is not None:
                failed[name] = verdicts.refusal
                continue
            verdict = verdicts.diagnosis.get(name)
            if verdict is None:
                failed[name] = NOT_IN_CACHE_REASON
            elif verdict.feasible:
                passed.append(name)
            elif verdict.unresolvable:
                # UnschedulableAndUnresolvable: kube-scheduler will not preempt on this node.
                unresolvable[name] = ", ".join(verdict.reasons)
            else:
                failed[name] = ", ".join(verdict.reasons)
                if verdict.failed_plugin == headroom.NAME:
                    kept.append(name)
        if not passed and kept:
            # The nodes headroom would send the pod to are not among kube-scheduler's
            # candidates (its own filters refused them): headroom steps aside, as it does
            # in-process when no other node fits.
            passed = kept
            for name in kept:
                del failed[name]
        result: JsonDict = {
            "Nodes": None,
            "NodeNames": None,
            "FailedNodes": failed,
            "FailedAndUnresolvableNodes": unresolvable,
            "Error": "",
        }
        if request.nodes is None:
            result["NodeNames"] = passed
        else:
            result["Nodes"] = {
                "apiVersion": "v1",
                "kind": "NodeList",
                "metadata": {},
                "items": [request.nodes[name] for name in passed],
            }
        return result

    def prioritize(self, request: ExtenderRequest) -> list[JsonDict]:
        """HostPriorityList: gputopo's weighted totals rescaled onto 0..MaxExtenderPriority.

        The best candidate gets 10, the worst feasible one 0, the rest linearly between (so
        gputopo's ranking survives whatever constant part the totals share); nodes gputopo
        filters out get 0. How much the ranking counts is kube-scheduler's `weight`.
        """
        verdicts = self._evaluate(request)
        totals = {
            name: verdict.score
            for name in request.node_names
            if (verdict := verdicts.diagnosis.get(name)) is not None and verdict.feasible
        }
        return [
            {"Host": name, "Score": score}
            for name, score in zip(
                request.node_names, rescale(request.node_names, totals), strict=True
            )
        ]

    def preempt(self, request: PreemptionRequest) -> JsonDict:
        """ExtenderPreemptionResult: the candidates where, with kube-scheduler's victims gone,
        gputopo's filters pass too — victims unchanged (kube-scheduler chose them fewest and
        lowest-priority already). A node gputopo would still refuse is dropped, so
        kube-scheduler never evicts pods for a node gputopo's filter then turns down."""
        kept: dict[str, JsonDict] = {}
        with self.lock:
            try:
                pod = parse_pod(request.pod)
            except SchedulerInputError:
                return {"NodeNameToMetaVictims": kept}
            snapshot = self.framework.snapshot
            key_of_uid = {entry.pod.uid: key for key, entry in snapshot.pods.items()}
            for node, (uids, violations) in request.victims.items():
                removed = []
                for uid in uids:
                    key = key_of_uid.get(uid)
                    victim = snapshot.pod(key) if key is not None else None
                    if key is not None and victim is not None and not snapshot.is_assumed(key):
                        removed.append(victim)
                        snapshot.remove_pod(key)
                try:
                    verdict = schedule_one(pod, snapshot, self.framework.profile).diagnosis()
                finally:
                    for victim in removed:
                        snapshot.add_pod(victim)
                node_verdict = verdict.get(node)
                if node_verdict is not None and node_verdict.feasible:
                    kept[node] = {
                        "Pods": [{"UID": uid} for uid in uids],
                        "NumPDBViolations": violations,
                    }
        log.info(
            "extender preempt",
            extra={"pod": pod.key, "candidates": len(request.victims), "kept": sorted(kept)},
        )
        return {"NodeNameToMetaVictims": kept}

    def bind(self, request: BindingRequest) -> JsonDict:
        """ExtenderBindingResult: the pods/binding request made, or why it failed."""
        if self.binder is None:
            return {"Error": "bind: this extender has no API access to bind with"}
        try:
            self.binder(request.namespace, request.name, request.uid, request.node)
        except Exception as err:  # the API's answer goes back to kube-scheduler as Error
            log.warning(
                "extender bind failed",
                extra={"pod": f"{request.namespace}/{request.name}", "error": str(err)},
            )
            return {"Error": f"bind {request.namespace}/{request.name} to {request.node}: {err}"}
        log.info(
            "pod bound by the extender",
            extra={"pod": f"{request.namespace}/{request.name}", "node": request.node},
        )
        return {"Error": ""}


def rescale(names: Sequence[str], totals: Mapping[str, int]) -> list[int]:
    """Min-max onto 0..10 (rounded half up); all equal -> all 10; names without a total -> 0."""
    if not totals:
        return [MIN_EXTENDER_PRIORITY for _ in names]
    low, high = min(totals.values()), max(totals.values())
    span = high - low
    out: list[int] = []
    for name in names:
        total = totals.get(name)
        if total is None:
            out.append(MIN_EXTENDER_PRIORITY)
        elif span == 0:
            out.append(MAX_EXTENDER_PRIORITY)
        else:
            out.append((2 * (total - low) * MAX_EXTENDER_PRIORITY + span) // (2 * span))
    return out


class ExtenderCache:
    """List+watch of Nodes, Pods and Namespaces into a ClusterCache (bound, running pods only)."""

    def __init__(self, api: KubeApi, framework: CoreFramework) -> None:
        self.cache = ClusterCache(framework)
        self.framework = framework
        self.reflectors = [
            Reflector(api, "Node", NODES_PATH, self),
            Reflector(api, "Pod", PODS_PATH, self),
            Reflector(api, "Namespace", NAMESPACES_PATH, self),
        ]

    def start(self) -> None:
        for reflector in self.reflectors:
            reflector.start()

    def stop(self) -> None:
        for reflector in self.reflectors:
            reflector.stop()

    def synced(self) -> bool:
        return all(reflector.synced.is_set() for reflector in self.reflectors)

    def healthy(self) -> bool:
        return all(reflector.alive() for reflector in self.reflectors)

    def on_add(self, kind: str, obj: JsonDict) -> None:
        self._upsert(kind, obj)

    def on_update(self, kind: str, old: JsonDict, new: JsonDict) -> None:
        if kind == "Pod" and node_name_of(old) and not node_name_of(new):
            self.cache.delete_pod(old)  # cannot happen in Kubernetes; stay consistent anyway
        self._upsert(kind, new)

    def on_delete(self, kind: str, obj: JsonDict) -> None:
        if kind == "Pod":
            self.cache.delete_pod(obj)
        elif kind == "Node":
            self.cache.delete_node(obj)
        elif kind == "Namespace":
            with self.cache.lock:
                self.framework.delete_namespace(str(obj["metadata"]["name"]))

    def _upsert(self, kind: str, obj: JsonDict) -> None:
        if kind == "Pod":
            if node_name_of(obj):
                self.cache.upsert_bound_pod(obj)  # drops it again once it is terminal
            elif is_terminal(obj):
                self.cache.delete_pod(obj)
        elif kind == "Node":
            self.cache.upsert_node(obj)
        elif kind == "Namespace":
            with self.cache.lock:
                self.framework.upsert_namespace(obj)


class ExtenderServer(ProbeServer):
    """HTTP: POST .../filter, .../prioritize, .../preempt and .../bind (any path prefix),
    GET /healthz and /readyz — the one probe server both deployables run
    (:mod:`gputopo.core.serve`), with the verbs as its POST routes."""

    def __init__(
        self,
        address: str,
        extender: Extender,
        ready: Callable[[], bool] = lambda: True,
        healthy: Callable[[], bool] = lambda: True,
    ) -> None:
        self.extender = extender
        host, port = parse_address(address, flag="--listen", example=":8888")
        probes = Probes(
            liveness=check(healthy, "unhealthy: a watch stopped"),
            readiness=check(ready, "not ready: the cache has not listed everything yet"),
        )
        routes = dict.fromkeys(VERBS, self._route)
        super().__init__(host, port, probes=probes, routes=routes, thread_name="extender-http")

    def _route(self, verb: str, raw: bytes) -> tuple[int, bytes, str]:
        status, answer = self.handle(verb, raw)
        return status, json.dumps(answer, separators=(",", ":")).encode(), "application/json"

    def handle(self, verb: str, raw: bytes) -> tuple[int, Any]:
        """(HTTP status, JSON answer) for one verb; bad input is a 400 naming the field."""
        try:
            body = load_json(raw or b"null", source="request body")
            if verb == "preempt":
                return 200, self.extender.preempt(PreemptionRequest.from_json(body))
            if verb == "bind":
                return 200, self.extender.bind(BindingRequest.from_json(body))
            request = ExtenderRequest.from_json(body)
        except (ValueError, ExtenderArgsError) as err:
            message = f"{verb}: {err}"
            log.warning("bad extender request", extra={"error": message})
            if verb in ("filter", "bind"):
                return 400, {"Error": message}
            return 400, {"error": message}
        if verb == "filter":
            return 200, self.extender.filter(request)
        return 200, self.extender.prioritize(request)
