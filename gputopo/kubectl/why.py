"""``kubectl gputopo why POD``: simulate's explanation for one live pending pod.

The live Nodes, Namespaces, PriorityClasses and running Pods — what ``simulate`` reads from
YAML — are read from the API server and put through the same
:func:`~gputopo.scheduler.simulate.cluster_from_objects`, and the pod is placed by the same
:func:`~gputopo.scheduler.simulate.simulate`: one cycle, now, with every node's verdict. Other
pending pods hold nothing and are left out, as they are for the running scheduler. An object
the scheduler cannot read is left out with a note, as the running scheduler leaves it out.

What simulate does not model is not modelled here either: gang waits (PodGroups), reservations
and preemption. When the simulation places the pod, the report says so and names the usual
reasons a pending pod still waits (another scheduler's name, a gate, its next attempt).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

import yaml

from gputopo.core.cli import EXIT_FAILURE, CliError
from gputopo.core.kube import KubeClient
from gputopo.kubectl import live
from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.framework import ScheduleResult
from gputopo.scheduler.gang import POD_GROUP_LABEL
from gputopo.scheduler.model import parse_pod
from gputopo.scheduler.scheduling_profile import SchedulerProfile
from gputopo.scheduler.simulate import (
    ClusterInput,
    cluster_from_objects,
    explain_lines,
    result_to_json,
    simulate,
)

DEFAULT_SCHEDULER_NAME: Final = "gputopo-scheduler"  # the runtime's default --scheduler-name
WHERE: Final = "live cluster"


@dataclass
class Explanation:
    """The answer for one pod: where it is bound, or the simulation's result and notes."""

    pod: str
    scheduler_name: str
    bound_to: str | None = None
    phase: str = ""
    condition: str | None = None  # the PodScheduled condition's message, as the pod says now
    pod_group: str | None = None  # its gang's PodGroup (scheduling.x-k8s.io/pod-group)
    parse_error: str | None = None
    result: ScheduleResult | None = None
    nodes: int = 0
    running_pods: int = 0
    notes: list[str] = field(default_factory=list)


def _scheduled_condition(pod: Mapping[str, Any]) -> str | None:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            reason = condition.get("reason") or ""
            message = condition.get("message") or ""
            return f"{reason}: {message}" if reason and message else reason or message or None
    return None


def live_objects(
    client: KubeClient, pod: Mapping[str, Any]
) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """What simulate reads, from the API server: the pending ``pod`` last, as the one to place."""
    key = _key(pod)
    for namespace in live.list_namespaces(client):
        yield WHERE, namespace
    for priority_class in live.list_priority_classes(client):
        yield WHERE, priority_class
    for node in live.list_nodes(client):
        yield WHERE, node
    for running in live.list_running_pods(client, bound_only=True):
        if _key(running) != key:
            yield WHERE, running
    yield WHERE, pod


def _key(pod: Mapping[str, Any]) -> str:
    metadata = pod.get("metadata") or {}
    return f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"


def explain(
    client: KubeClient, namespace: str, name: str, profile: SchedulerProfile | None = None
) -> Explanation:
    path = f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(name, safe='')}"
    pod = live.get(client, path, f"reading pod {namespace}/{name}")
    if pod is None:
        raise CliError(f'pod "{name}" not found in namespace "{namespace}"', EXIT_FAILURE)
    pod = {"kind": "Pod", **pod}
    spec = pod.get("spec") or {}
    explanation = Explanation(
        pod=f"{namespace}/{name}",
        scheduler_name=str(spec.get("schedulerName") or "default-scheduler"),
        bound_to=spec.get("nodeName") or None,
        phase=str((pod.get("status") or {}).get("phase") or ""),
        condition=_scheduled_condition(pod),
        pod_group=((pod.get("metadata") or {}).get("labels") or {}).get(POD_GROUP_LABEL),
    )
    if explanation.bound_to or explanation.phase in ("Succeeded", "Failed"):
        return explanation
    try:
        parse_pod(pod)
    except SchedulerInputError as error:
        explanation.parse_error = str(error)  # the running scheduler's reason, word for word
        return explanation
    cluster = cluster_from_objects(live_objects(client, pod), skip_invalid=True)
    explanation.notes = cluster.notes
    explanation.nodes = len(cluster.nodes)
    explanation.running_pods = len(cluster.bound_pods)
    pending = _only(cluster, explanation.pod)
    _, results = simulate(pending, profile, explain=True)
    explanation.result = results[0]
    return explanation


def _only(cluster: ClusterInput, key: str) -> ClusterInput:
    """The cluster with the one pod to place (a pending pod is never load)."""
    pod = next(p for p in cluster.pending_pods if p.key == key)
    cluster.pending_pods = [pod]
    return cluster


# --- output --------------------------------------------------------------------------------


def render_text(explanation: Explanation, scheduler_name: str = DEFAULT_SCHEDULER_NAME) -> str:
    pod = explanation.pod
    if explanation.bound_to:
        return f"pod {pod} is bound to node {explanation.bound_to}: nothing to explain."
    if explanation.phase in ("Succeeded", "Failed"):
        return f"pod {pod} has finished ({explanation.phase}): nothing to explain."
    lines = [
        f"pod {pod}: {explanation.phase or 'Pending'}, schedulerName {explanation.scheduler_name}"
    ]
    if explanation.scheduler_name != scheduler_name:
        lines.append(
            f"  note: gputopo's scheduler is {scheduler_name!r}; this pod waits for "
            f"{explanation.scheduler_name!r}, which may decide differently"
        )
    if explanation.condition:
        lines.append(f"  the pod says: {explanation.condition}")
    if explanation.pod_group:
        lines.append(
            f"  note: a member of PodGroup {explanation.pod_group!r}: the scheduler places it "
            "only with its gang (docs/gang.md); simulated here alone"
        )
    if explanation.parse_error:
        lines.append(f"  unschedulable: {explanation.parse_error}")
        return "\n".join(lines)
    result = explanation.result
    assert result is not None
    lines.append(
        f"simulated now on the live cluster ({explanation.nodes} nodes, "
        f"{explanation.running_pods} running pods):"
    )
    if result.node is not None:
        lines.append(f"  fits: would be placed on {result.node}")
        lines.append(
            "  (it is still pending: a scheduling gate, a gang not yet complete, a "
            "reservation, or its next attempt has not come)"
        )
    else:
        lines.append(f"  not placed: {result.message}")
    for warning in result.warnings:
        lines.append(f"  warning: {warning}")
    lines.extend(explain_lines(result, 0))
    return "\n".join(lines)


def document(explanation: Explanation) -> dict[str, Any]:
    out: dict[str, Any] = {
        "pod": explanation.pod,
        "schedulerName": explanation.scheduler_name,
        "phase": explanation.phase,
        "boundTo": explanation.bound_to,
        "condition": explanation.condition,
        "podGroup": explanation.pod_group,
    }
    if explanation.parse_error:
        out["unschedulable"] = explanation.parse_error
    if explanation.result is not None:
        out["simulation"] = result_to_json(explanation.result, explain=True)
        out["simulation"]["clusterNodes"] = explanation.nodes
        out["simulation"]["runningPods"] = explanation.running_pods
    if explanation.notes:
        out["notes"] = list(explanation.notes)
    return out


def render_document(explanation: Explanation, output: str) -> str:
    doc = document(explanation)
    if output == "json":
        return json.dumps(doc, indent=2)
    return yaml.safe_dump(doc, sort_keys=False).rstrip("\n")
