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
extender, UID-guarded, and only to a node that passes the extender's own filters for that pod:
it holds a ServiceAccount that may bind any pod anywhere, so a call it did not check would lend
that power to whoever can reach it).

Who can reach it is decided at the socket: the server speaks mutual TLS (``--tls-cert-file``,
``--tls-private-key-file``, ``--client-ca-file``; kube-scheduler's ``enableHTTPS`` with a
``tlsConfig`` client certificate), so a caller without a certificate from the client CA never
gets to send a request (docs/security.md).

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
import math
import ssl
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from gputopo.core.address import parse_address
from gputopo.core.documents import INT64_MAX, INT64_MIN, MAX_DEPTH, load_json
from gputopo.core.serve import Limits, Probes, ProbeServer, check
from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.extender_wire import (
    BindingRequest,
    ExtenderArgsError,
    ExtenderRequest,
    PreemptionRequest,
)
from gputopo.scheduler.framework import NodeDiagnosis, schedule_one
from gputopo.scheduler.model import parse_pod
from gputopo.scheduler.plugins import headroom
from gputopo.scheduler.runtime.cache import ClusterCache, is_terminal, node_name_of
from gputopo.scheduler.runtime.core_adapter import CoreFramework
from gputopo.scheduler.runtime.informer import Reflector, strip_managed_fields
from gputopo.scheduler.runtime.kube import JsonDict, KubeApi

log = logging.getLogger("gputopo.scheduler.extender")

MIN_EXTENDER_PRIORITY: Final = 0
MAX_EXTENDER_PRIORITY: Final = 10

NOT_IN_CACHE_REASON: Final = "node(s) not yet in gputopo's cache"
VERBS: Final = ("filter", "prioritize", "preempt", "bind")

NODES_PATH: Final = "/api/v1/nodes"
PODS_PATH: Final = "/api/v1/pods"
NAMESPACES_PATH: Final = "/api/v1/namespaces"

__all__ = [  # the wire types are re-exported: callers import the extender from one place
    "BindingRequest",
    "Extender",
    "ExtenderArgsError",
    "ExtenderCache",
    "ExtenderRequest",
    "ExtenderServer",
    "PreemptionRequest",
    "rescale",
]


Binder = Callable[[str, str, str, str], None]  # (namespace, name, uid, node): KubeApi.bind
PodReader = Callable[[str, str], JsonDict]  # (namespace, name) -> the Pod as the API has it


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
        pod_reader: PodReader | None = None,
    ) -> None:
        self.framework = framework
        self.lock = lock or threading.RLock()
        self.binder = binder
        self.pod_reader = pod_reader
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
        """ExtenderBindingResult: the pods/binding request made, or why it was not.

        The pod is read from the API (not from the caller) and bound only if it is the pod the
        caller named (same UID), not bound yet, and ``request.node`` passes this extender's
        filters for it — the same answer ``filter`` would give with that node as the only
        candidate. Anything else is an Error, and nothing is written."""
        if self.binder is None or self.pod_reader is None:
            return {"Error": "bind: this extender has no API access to bind with"}
        where = f"bind {request.namespace}/{request.name} to {request.node}"
        try:
            pod = self.pod_reader(request.namespace, request.name)
        except Exception as err:  # not found, forbidden, API down: nothing is bound
            return self._refuse_bind(request, where, f"reading the pod: {err}")
        meta = pod.get("metadata") or {}
        if meta.get("uid") != request.uid:
            return self._refuse_bind(
                request, where, f"the pod's UID is {meta.get('uid')!r}, not {request.uid!r}"
            )
        bound_to = (pod.get("spec") or {}).get("nodeName")
        if bound_to:
            return self._refuse_bind(request, where, f"the pod is already bound to {bound_to}")
        verdict = self.filter(ExtenderRequest(pod=pod, node_names=(request.node,), nodes=None))
        if request.node not in (verdict["NodeNames"] or ()):
            reason = (
                verdict["FailedNodes"].get(request.node)
                or verdict["FailedAndUnresolvableNodes"].get(request.node)
                or "refused by gputopo's filters"
            )
            return self._refuse_bind(request, where, f"the node fails gputopo's filters: {reason}")
        try:
            self.binder(request.namespace, request.name, request.uid, request.node)
        except Exception as err:  # the API's answer goes back to kube-scheduler as Error
            log.warning(
                "extender bind failed",
                extra={"pod": f"{request.namespace}/{request.name}", "error": str(err)},
            )
            return {"Error": f"{where}: {err}"}
        log.info(
            "pod bound by the extender",
            extra={"pod": f"{request.namespace}/{request.name}", "node": request.node},
        )
        return {"Error": ""}

    @staticmethod
    def _refuse_bind(request: BindingRequest, where: str, reason: str) -> JsonDict:
        log.warning(
            "extender bind refused",
            extra={
                "pod": f"{request.namespace}/{request.name}",
                "node": request.node,
                "reason": reason,
            },
        )
        return {"Error": f"{where}: {reason}"}


def load_body(raw: bytes) -> Any:
    """A verb's JSON body within :mod:`gputopo.core.documents`' limits (depth, int64, finite
    numbers), or its :class:`DocumentError` naming the path.

    ``load_json`` checks every value with its path (built for documents with YAML aliases):
    measured on an ExtenderArgs with 500 NodeNames, 1.5 ms against 0.12 ms to parse, more than
    the p99 budget of a verb can spare (docs/performance.md#extender). JSON has no aliases, so
    here a walk without paths decides, in 0.02 ms, whether the body is within the limits; only
    a body that is not goes through ``load_json``, for its one-line error."""
    try:
        document = json.loads(raw, parse_constant=_not_a_number)
    except (ValueError, RecursionError):
        return load_json(raw, source="request body")  # raises, saying why
    if not _within_bounds(document):
        return load_json(raw, source="request body")
    return document


def _not_a_number(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _within_bounds(document: Any) -> bool:
    """True when no container is nested deeper than MAX_DEPTH, every integer is an int64 and
    every float finite (False may also mean "ask load_json": it is the one that explains)."""
    if type(document) is not dict and type(document) is not list:
        return False  # a bare scalar: small, let load_json judge it
    stack: list[tuple[Any, int]] = [(document, 0)]
    while stack:
        container, depth = stack.pop()
        if depth > MAX_DEPTH:
            return False
        for value in container.values() if type(container) is dict else container:
            kind = type(value)
            if kind is str or kind is bool or value is None:
                continue
            if kind is dict or kind is list:
                stack.append((value, depth + 1))
            elif kind is int:
                if not INT64_MIN <= value <= INT64_MAX:
                    return False
            elif kind is float and not math.isfinite(value):
                return False
    return True


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
            # managedFields dropped, as the scheduler runtime's watches do (memory per pod)
            Reflector(api, "Node", NODES_PATH, self, transform=strip_managed_fields),
            Reflector(api, "Pod", PODS_PATH, self, transform=strip_managed_fields),
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
    (:mod:`gputopo.core.serve`), with the verbs as its POST routes; over mutual TLS when given
    ``tls`` (:func:`gputopo.core.serve.mutual_tls_context`)."""

    def __init__(
        self,
        address: str,
        extender: Extender,
        ready: Callable[[], bool] = lambda: True,
        healthy: Callable[[], bool] = lambda: True,
        *,
        tls: ssl.SSLContext | None = None,
        client_names: frozenset[str] = frozenset(),
        limits: Limits | None = None,
    ) -> None:
        self.extender = extender
        host, port = parse_address(address, flag="--listen", example=":8888")
        probes = Probes(
            liveness=check(healthy, "unhealthy: a watch stopped"),
            readiness=check(ready, "not ready: the cache has not listed everything yet"),
        )
        routes = dict.fromkeys(VERBS, self._route)
        super().__init__(
            host,
            port,
            probes=probes,
            routes=routes,
            thread_name="extender-http",
            limits=limits,
            tls=tls,
            client_names=client_names,
        )

    def _route(self, verb: str, raw: bytes) -> tuple[int, bytes, str]:
        status, answer = self.handle(verb, raw)
        return status, json.dumps(answer, separators=(",", ":")).encode(), "application/json"

    def handle(self, verb: str, raw: bytes) -> tuple[int, Any]:
        """(HTTP status, JSON answer) for one verb; bad input is a 400 naming the field."""
        try:
            body = load_body(raw or b"null")
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
