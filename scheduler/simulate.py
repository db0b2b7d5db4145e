"""Offline scheduling of plain Kubernetes YAML: what would go where, and why not.

Input files hold Nodes, Namespaces, PriorityClasses and Pods (multi-document YAML or a `v1 List`),
and the DRA objects (`resource.k8s.io/v1` DeviceClasses, ResourceSlices, ResourceClaims,
ResourceClaimTemplates, DeviceTaintRules). A pod's claims are allocated as it is placed; a claim
from a template is the one kube-controller-manager would create (`<pod>-<claim name>`), and each
placed pod's allocations are printed under ``"claims"``.
Pods with `spec.nodeName` are existing load; the others are placed one at a time, in file order
(files in the order given, documents in file order), each placement counting as load for the
pods after it. Priorities are resolved (and an unknown `priorityClassName` is an input error, as
admission would reject it), but they do not reorder the queue: file order keeps a simulation
easy to read and to reproduce.

Every file is read through `gputopo.core.documents`: at most :data:`MAX_CLUSTER_FILE_BYTES`, UTF-8,
nested at most 64 deep, aliases counted expanded, integers within int64 and floats finite; a
file that breaks a limit is one line naming it (docs/operations.md lists the limits).
"""

from __future__ import annotations

import contextlib
import gc
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from gputopo.core.contract import DEFAULT_CONTRACT
from gputopo.core.documents import DocumentError, load_json, load_yaml_all, read_text
from gputopo.scheduler.dra.state import KINDS as DRA_KINDS
from gputopo.scheduler.dra.state import DraState
from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.framework import ScheduleResult, schedule_one
from gputopo.scheduler.model import (
    BUILTIN_PRIORITY_CLASSES,
    Namespace,
    Node,
    Pod,
    PriorityClass,
    parse_namespace,
    parse_node,
    parse_pod,
    parse_priority_class,
)
from gputopo.scheduler.scheduling_profile import SchedulerProfile, default_profile
from gputopo.scheduler.snapshot import ClusterSnapshot

# The benchmark's cluster (tests/bench/test_simulate_bench.py, 5000 nodes and 50 000 pods)
# written as block-style YAML is 22.6 MB; the limit leaves it room and refuses a 100 MB file at
# once instead of spending a minute and a third of a gigabyte on it. Split a larger cluster
# into several --cluster files.
MAX_CLUSTER_FILE_BYTES: Final = 32 * 1024 * 1024

_IGNORED_KINDS = frozenset({"Event", "Lease", "ConfigMap", "Secret", "ServiceAccount"})


@dataclass
class ClusterInput:
    """Everything read from the input files, parsed and checked."""

    nodes: list[Node] = field(default_factory=list)
    namespaces: list[Namespace] = field(default_factory=list)
    priority_classes: dict[str, PriorityClass] = field(default_factory=dict)
    bound_pods: list[Pod] = field(default_factory=list)
    pending_pods: list[Pod] = field(default_factory=list)
    # PodDisruptionBudgets as read (rebalance plans with them; placement ignores them).
    disruption_budgets: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dra: DraState = field(default_factory=lambda: DraState(invent_from_templates=True))


def _documents(path: str, text: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(where, object) for every object in a file, unpacking `kind: List`."""
    try:
        documents = load_yaml_all(text, source=path)
    except DocumentError as exc:
        raise SchedulerInputError(str(exc)) from None
    for number, document in enumerate(documents, start=1):
        if document is None:
            continue
        where = f"{path}: document {number}"
        if not isinstance(document, Mapping):
            raise SchedulerInputError(
                f"{where}: expected a Kubernetes object (a mapping with kind), "
                f"got {type(document).__name__}"
            )
        if document.get("kind") == "List" or str(document.get("kind", "")).endswith("List"):
            items = document.get("items")
            if not isinstance(items, list):
                raise SchedulerInputError(f"{where}: items: expected a list")
            for index, item in enumerate(items):
                if not isinstance(item, Mapping):
                    raise SchedulerInputError(f"{where}: items[{index}]: expected an object")
                yield f"{where}, items[{index}]", item
        else:
            yield where, document


def load_cluster(paths: Sequence[str | Path]) -> ClusterInput:
    """Read and check the input files; errors name the file, document and object."""
    return cluster_from_objects(_file_objects(paths))


def _file_objects(paths: Sequence[str | Path]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for path in paths:
        try:
            text = read_text(path, what="cluster file", max_bytes=MAX_CLUSTER_FILE_BYTES)
        except DocumentError as exc:
            raise SchedulerInputError(str(exc)) from None
        yield from _documents(str(path), text)


def cluster_from_objects(
    objects: Iterable[tuple[str, Mapping[str, Any]]], *, skip_invalid: bool = False
) -> ClusterInput:
    """The cluster of (where, object) pairs, checked as :func:`load_cluster` checks files.

    ``kubectl gputopo why`` builds the cluster of live objects here, so it is the one
    simulate explains. With ``skip_invalid`` an object the scheduler cannot read (the API server
    accepts some that it refuses) is left out with a note naming it, as the running scheduler
    leaves it out, instead of failing the whole cluster; and a Node whose topology annotation is
    not even JSON is kept with a note, its labels describing its GPUs, as the running scheduler
    keeps it (in a file, that annotation is the user's error).
    """
    cluster = ClusterInput()
    seen: dict[tuple[str, str], str] = {}
    pod_where: dict[str, str] = {}
    for where, obj in objects:
        kind = obj.get("kind")
        if not isinstance(kind, str) or not kind:
            raise SchedulerInputError(f"{where}: kind: must be set")
        try:
            identity = _add_object(cluster, kind, obj, where, live=skip_invalid)
        except SchedulerInputError as exc:
            if not skip_invalid:
                raise SchedulerInputError(f"{where}: {exc}") from None
            cluster.notes.append(f"{where}: {exc}; skipped")
            continue
        if identity is None:
            continue
        if identity in seen:
            first = seen[identity]
            raise SchedulerInputError(
                f"{where}: {identity[0]} {identity[1]}: defined twice (first at {first})"
            )
        seen[identity] = where
        if identity[0] == "Pod":
            pod_where[identity[1]] = where
    _resolve_priorities(cluster, pod_where)
    return cluster


def _add_object(
    cluster: ClusterInput, kind: str, obj: Mapping[str, Any], where: str, live: bool = False
) -> tuple[str, str] | None:
    if kind == "Node":
        node = parse_node(obj)
        try:
            _check_topology_annotation(node)
        except SchedulerInputError as exc:
            if not live:
                raise
            # Not the user's file but the cluster: the running scheduler keeps such a node.
            cluster.notes.append(f"{where}: {exc}; its labels describe its GPUs instead")
        cluster.nodes.append(node)
        return ("Node", node.name)
    if kind == "Namespace":
        namespace = parse_namespace(obj)
        cluster.namespaces.append(namespace)
        return ("Namespace", namespace.name)
    if kind == "PriorityClass":
        priority_class = parse_priority_class(obj)
        cluster.priority_classes[priority_class.name] = priority_class
        return ("PriorityClass", priority_class.name)
    if kind == "Pod":
        pod = parse_pod(obj)
        (cluster.bound_pods if pod.node_name else cluster.pending_pods).append(pod)
        return ("Pod", pod.key)
    if kind in DRA_KINDS:
        return (kind, cluster.dra.observe(kind, obj))
    if kind == "PodDisruptionBudget":
        return _add_budget(cluster, obj)
    if kind not in _IGNORED_KINDS:
        cluster.notes.append(
            f"{where}: kind {kind} is not simulated (only Node, Namespace, PriorityClass, Pod "
            "and the DRA kinds); skipped"
        )
    return None


def _add_budget(cluster: ClusterInput, obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata")
    spec = obj.get("spec")
    if not isinstance(meta, Mapping) or not meta.get("name"):
        raise SchedulerInputError("PodDisruptionBudget: metadata.name: must be set")
    key = f"{meta.get('namespace') or 'default'}/{meta['name']}"
    if not isinstance(spec, Mapping):
        raise SchedulerInputError(f"PodDisruptionBudget {key}: spec: expected an object")
    selector = spec.get("selector")
    if selector is not None and not isinstance(selector, Mapping):
        raise SchedulerInputError(f"PodDisruptionBudget {key}: spec.selector: expected an object")
    for name in ("minAvailable", "maxUnavailable"):
        value = spec.get(name)
        if value is not None and not _int_or_percent(value):
            raise SchedulerInputError(
                f"PodDisruptionBudget {key}: spec.{name}: expected an integer or a percentage, "
                f"got {value!r}"
            )
    cluster.disruption_budgets.append(dict(obj))
    return ("PodDisruptionBudget", key)


def _int_or_percent(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 0
    return isinstance(value, str) and value.endswith("%") and value[:-1].isdigit()


def _check_topology_annotation(node: Node) -> None:
    """An annotation that is not even bounded JSON is an error in the user's file; one that is
    JSON but not a topology this build reads (a newer version) is left to the scheduler, which
    warns and falls back to the node's labels, as the running scheduler does."""
    key = DEFAULT_CONTRACT.topology_annotation
    text = node.annotations.get(key)
    if text:
        try:
            load_json(text, source="not JSON")
        except DocumentError as exc:
            problem = str(exc).removeprefix("not JSON: ")
            raise SchedulerInputError(
                f"Node {node.name}: metadata.annotations[{key}]: {problem}"
            ) from None


def _resolve_priorities(cluster: ClusterInput, pod_where: Mapping[str, str]) -> None:
    defaults = [pc for pc in cluster.priority_classes.values() if pc.global_default]
    default_value = max((pc.value for pc in defaults), default=0)
    for pod in cluster.bound_pods + cluster.pending_pods:
        if pod.priority is not None:
            continue
        name = pod.priority_class_name
        if not name:
            pod.priority = default_value
        elif name in cluster.priority_classes:
            pod.priority = cluster.priority_classes[name].value
        elif name in BUILTIN_PRIORITY_CLASSES:
            pod.priority = BUILTIN_PRIORITY_CLASSES[name]
        else:
            raise SchedulerInputError(
                f"{pod_where[pod.key]}: Pod {pod.key}: spec.priorityClassName: "
                f"no PriorityClass with name {name!r} was found"
            )


def build_snapshot(cluster: ClusterInput) -> ClusterSnapshot:
    snapshot = ClusterSnapshot()
    for namespace in cluster.namespaces:
        snapshot.add_namespace(namespace)
    for node in cluster.nodes:
        snapshot.add_node(node)
    for pod in cluster.bound_pods:
        snapshot.add_pod(pod)
    snapshot.attach(cluster.dra)
    return snapshot


def simulate(
    cluster: ClusterInput, profile: SchedulerProfile | None = None, explain: bool = True
) -> tuple[ClusterSnapshot, list[ScheduleResult]]:
    """Place the pending pods in order; each placement is assumed before the next pod.

    With `explain=False` the per-node diagnosis is dropped after each pod, which keeps memory
    flat on large clusters (messages and placements are kept).
    """
    profile = profile or default_profile()
    snapshot = build_snapshot(cluster)
    results: list[ScheduleResult] = []
    with _long_lived_frozen():
        for pod in cluster.pending_pods:
            result = schedule_one(pod, snapshot, profile, sample=True)
            if result.node is not None:
                snapshot.assume(pod, result.node)
                _assume_claims(cluster, snapshot, pod, result)
            if explain:
                result.keep_diagnosis()
            else:
                result.discard_diagnosis()
            results.append(result)
    return snapshot, results


@contextlib.contextmanager
def _long_lived_frozen() -> Iterator[None]:
    """Keep the objects alive now (the input and the snapshot: they outlive the loop) out of
    the garbage collector's full passes while the pods are placed, as `gc.freeze` documents;
    those passes walked every parsed pod again and again, 2.5 % of a 5000-node run's CPU
    (docs/performance.md). Left alone when something else froze objects already."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _assume_claims(
    cluster: ClusterInput, snapshot: ClusterSnapshot, pod: Pod, result: ScheduleResult
) -> None:
    """Record the placed pod's allocations: later pods see those devices taken."""
    if result.node is None:
        return
    node = snapshot.node(result.node)
    assert node is not None
    dra = cluster.dra
    claims = dra.pod_claims(pod, invent_from_templates=True) if pod.resource_claims else []
    extended = {
        resource: wanted
        for resource, wanted in dra.extended_requests(pod).items()
        if node.allocatable.get(resource, 0) <= 0
    }
    if extended:  # DRA serves them on this node (DeviceClass extendedResourceName)
        claims.append(dra.extended_claim(pod, extended))
    if not claims:
        return
    outcome = dra.allocate(pod, node, claims)
    assert not isinstance(outcome, str), outcome  # the filter passed this node
    dra.assume(pod, outcome)
    allocations: dict[str, list[dict[str, str]]] = {}
    for pod_claim in claims:
        key = pod_claim.claim.key
        results = outcome.allocation.results.get(key) or pod_claim.claim.allocation or ()
        allocations[pod_claim.pod_claim_name] = [r.wire() for r in results]
    result.claims = allocations


def result_to_json(result: ScheduleResult, explain: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"pod": result.pod, "node": result.node, "message": result.message}
    if result.claims:
        out["claims"] = result.claims
    if result.warnings:
        out["warnings"] = list(result.warnings)
    if explain:
        nodes: dict[str, Any] = {}
        for name, diagnosis in result.diagnosis().items():
            entry: dict[str, Any] = {
                "feasible": diagnosis.feasible,
                "reasons": list(diagnosis.reasons),
                "score": diagnosis.score,
            }
            if diagnosis.feasible:
                entry["scores"] = dict(diagnosis.plugin_scores)
            nodes[name] = entry
        out["nodes"] = nodes
    return out


def render_json(results: Sequence[ScheduleResult], explain: bool) -> str:
    return json.dumps({"pods": [result_to_json(r, explain) for r in results]}, indent=2)


def render_text(cluster: ClusterInput, results: Sequence[ScheduleResult], explain: bool) -> str:
    lines = [
        f"{len(cluster.nodes)} nodes, {len(cluster.bound_pods)} pods already running, "
        f"{len(cluster.pending_pods)} pods to place (in file order)",
        "",
    ]
    width = max((len(r.pod) for r in results), default=0)
    for result in results:
        if result.node is not None:
            lines.append(f"  {result.pod:<{width}}  ->  {result.node}")
            for claim_name, devices in (result.claims or {}).items():
                shown = ", ".join(f"{d['pool']}/{d['device']}" for d in devices)
                lines.append(f"  {'':<{width}}      claim {claim_name}: {shown}")
        else:
            lines.append(f"  {result.pod:<{width}}  --  not placed: {result.message}")
        for warning in result.warnings:
            lines.append(f"  {'':<{width}}      warning: {warning}")
        if explain:
            lines.extend(explain_lines(result, width))
    placed = sum(1 for r in results if r.node is not None)
    lines += ["", f"placed {placed} of {len(results)} pods"]
    return "\n".join(lines)


def explain_lines(result: ScheduleResult, width: int) -> list[str]:
    """Every node's verdict for one pod, best first: the chosen node starred, a feasible node
    with its score per plugin, an infeasible one with the reasons of the filter it failed
    (kube-scheduler's words). Indented to sit under a pod name ``width`` wide; also what
    ``kubectl gputopo why`` prints for a live pod."""
    diagnosis = result.diagnosis()
    if not diagnosis:
        return []
    name_width = max(len(name) for name in diagnosis)
    indent = " " * (width + 8)
    lines: list[str] = []
    ranked = sorted(diagnosis.items(), key=lambda item: (not item[1].feasible, -item[1].score))
    for name, node in ranked:
        marker = "*" if name == result.node else " "
        if node.feasible:
            parts = ", ".join(f"{plugin} {score}" for plugin, score in node.plugin_scores.items())
            lines.append(f"{indent}{marker} {name:<{name_width}}  score {node.score:>4}  ({parts})")
        else:
            lines.append(f"{indent}  {name:<{name_width}}  {'; '.join(node.reasons)}")
    return lines
