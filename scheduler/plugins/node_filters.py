"""The node-only filters, evaluated once per pod shape and cached in the snapshot.

NodeUnschedulable, NodeName, TaintToleration and NodeAffinity depend only on the pod's
nodeName/nodeSelector/node affinity/tolerations and on node labels, taints and cordon, so their
verdicts for every node are computed once per distinct pod shape and reused until a node
changes. The same pass records what spreading and scoring need of those plugins.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from gputopo.scheduler.model import Pod
from gputopo.scheduler.plugins import node_affinity, node_name, node_unschedulable, taint_toleration
from gputopo.scheduler.snapshot import BoolArray, ClusterSnapshot, IntArray

# Filter stages in kube-scheduler's default plugin order; a node reports its first failure.
STAGE_NODE_UNSCHEDULABLE: Final = 1
STAGE_NODE_NAME: Final = 2
STAGE_TAINT_TOLERATION: Final = 3
STAGE_NODE_AFFINITY: Final = 4
STAGE_NODE_PORTS: Final = 5
STAGE_NODE_RESOURCES_FIT: Final = 6
STAGE_POD_TOPOLOGY_SPREAD: Final = 7
STAGE_INTER_POD_AFFINITY: Final = 8
# Nodes NodeAffinity's PreFilter left out (pod pinned to other nodes by matchFields).
STAGE_NODE_AFFINITY_PREFILTER: Final = 9

STAGE_PLUGINS: Final = {
    STAGE_NODE_UNSCHEDULABLE: node_unschedulable.NAME,
    STAGE_NODE_NAME: node_name.NAME,
    STAGE_TAINT_TOLERATION: taint_toleration.NAME,
    STAGE_NODE_AFFINITY: node_affinity.NAME,
    STAGE_NODE_PORTS: "NodePorts",
    STAGE_NODE_RESOURCES_FIT: "NodeResourcesFit",
    STAGE_POD_TOPOLOGY_SPREAD: "PodTopologySpread",
    STAGE_INTER_POD_AFFINITY: "InterPodAffinity",
    STAGE_NODE_AFFINITY_PREFILTER: node_affinity.NAME,
}


class NodeFilterResult:
    """Per-slot verdicts of the node-only filters for one pod shape."""

    __slots__ = (
        "hard_taints_tolerated",
        "prefer_no_schedule",
        "preferred_affinity",
        "reason_id",
        "reasons",
        "required_match",
        "stage",
    )

    def __init__(self, capacity: int) -> None:
        self.stage: npt.NDArray[np.int8] = np.zeros(capacity, dtype=np.int8)
        self.reason_id: IntArray = np.zeros(capacity, dtype=np.int64)
        self.reasons: list[str] = []
        self.required_match: BoolArray = np.zeros(capacity, dtype=np.bool_)
        self.hard_taints_tolerated: BoolArray = np.zeros(capacity, dtype=np.bool_)
        self.preferred_affinity: IntArray = np.zeros(capacity, dtype=np.int64)
        self.prefer_no_schedule: IntArray = np.zeros(capacity, dtype=np.int64)


def evaluate(pod: Pod, snapshot: ClusterSnapshot) -> NodeFilterResult:
    cached = snapshot.static_cache().get(pod.static_key)
    if isinstance(cached, NodeFilterResult):
        return cached
    result = NodeFilterResult(snapshot.capacity)
    reason_ids: dict[str, int] = {}
    stage, reason_id = result.stage, result.reason_id
    required_match, hard_ok = result.required_match, result.hard_taints_tolerated
    preferred, prefer_no_schedule = result.preferred_affinity, result.prefer_no_schedule
    has_preferred = bool(pod.preferred_node_affinity)
    for slot, node in snapshot.iter_nodes():
        matches = node_affinity.required_matches(pod, node)
        required_match[slot] = matches
        taint = taint_toleration.untolerated_taint(pod, node) if node.taints else None
        hard_ok[slot] = taint is None
        if has_preferred:
            preferred[slot] = node_affinity.preferred_score(pod, node)
        if node.taints:
            prefer_no_schedule[slot] = taint_toleration.intolerable_prefer_no_schedule(pod, node)
        reason: str | None = None
        failed_stage = 0
        if node.unschedulable:
            reason = node_unschedulable.filter_node(pod, node)
            failed_stage = STAGE_NODE_UNSCHEDULABLE
        if reason is None and pod.node_name:
            reason = node_name.filter_node(pod, node)
            failed_stage = STAGE_NODE_NAME
        if reason is None and taint is not None:
            reason = taint_toleration.reason_for(taint)
            failed_stage = STAGE_TAINT_TOLERATION
        if reason is None and not matches:
            reason = node_affinity.REASON
            failed_stage = STAGE_NODE_AFFINITY
        if reason is not None:
            stage[slot] = failed_stage
            index = reason_ids.get(reason)
            if index is None:
                index = reason_ids[reason] = len(result.reasons)
                result.reasons.append(reason)
            reason_id[slot] = index
    snapshot.remember_static(pod.static_key, result)
    return result
