"""One scheduling cycle: filter every node, score the feasible ones, pick one.

`schedule_one(pod, snapshot)` is the whole decision and has no side effects; the caller records
a placement with `snapshot.assume(pod, node)`. Filters run in kube-scheduler's default order and
a node reports the reasons of the first filter it fails, so the failure message counts exactly
what kube-scheduler's would ("0/12 nodes are available: 4 Insufficient nvidia.com/gpu, ...").

Ties between equally scored nodes are broken by a stable hash of the pod's `namespace/name` and
the node's name (then by node name): deterministic across runs and processes, yet different pods
of one shape spread over equal nodes instead of all landing on the alphabetically first one.
kube-scheduler picks uniformly at random among ties instead.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from gputopo.scheduler import scheduling_profile as profiles
from gputopo.scheduler.model import Pod
from gputopo.scheduler.plugins import (
    balanced_allocation,
    gpu_topology,
    headroom,
    inter_pod_affinity,
    load_aware,
    node_affinity,
    node_filters,
    node_ports,
    resources_fit,
    topology_spread,
)
from gputopo.scheduler.plugins.node_filters import (
    STAGE_INTER_POD_AFFINITY,
    STAGE_NODE_AFFINITY_PREFILTER,
    STAGE_NODE_PORTS,
    STAGE_NODE_RESOURCES_FIT,
    STAGE_POD_TOPOLOGY_SPREAD,
    NodeFilterResult,
)
from gputopo.scheduler.plugins.normalize import default_normalize
from gputopo.scheduler.scheduling_profile import SchedulerProfile, default_profile
from gputopo.scheduler.snapshot import BoolArray, ClusterSnapshot, IntArray

NO_NODES_MESSAGE: Final = "no nodes available to schedule pods"
SCHEDULING_GATED_MESSAGE: Final = "Scheduling is blocked due to non-empty scheduling gates"


def fit_error_message(num_nodes: int, reason_counts: Mapping[str, int]) -> str:
    """kube-scheduler's `FitError.Error()`: "0/N nodes are available: <count reason>, ....".

    Each entry is "<count> <reason>"; entries are sorted as strings, exactly as Go's
    `sort.Strings` orders them (so "12 x" sorts before "4 y").
    """
    message = f"0/{num_nodes} nodes are available:"
    entries = sorted(f"{count} {reason}" for reason, count in reason_counts.items() if count)
    if entries:
        message += " " + ", ".join(entries) + "."
    return message


def reason_counts(node_reasons: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Histogram of per-node reasons, as FitError builds it (each reason of each node once)."""
    counts: dict[str, int] = {}
    for reasons in node_reasons.values():
        for reason in reasons:
            counts[reason] = counts.get(reason, 0) + 1
    return counts


@dataclass(frozen=True, slots=True)
class NodeDiagnosis:
    """Why one node was or was not chosen: the filter verdict and the weighted score."""

    feasible: bool
    reasons: tuple[str, ...]
    score: int
    plugin_scores: Mapping[str, int] = field(default_factory=dict)
    failed_plugin: str | None = None


class _Evaluation:
    """The arrays one cycle produced, kept so per-node diagnosis can be built on demand."""

    __slots__ = (
        "feasible_slots",
        "fit_failures",
        "gpu_topology",
        "headroom_min_gpus",
        "inter_pod",
        "load",
        "names",
        "node_filters",
        "plugin_scores",
        "slots",
        "spread",
        "stage",
        "total",
    )

    def __init__(
        self,
        names: tuple[str, ...],
        slots: IntArray,
        stage: npt.NDArray[np.int8],
        node_filters: NodeFilterResult,
        fit_failures: list[tuple[str, BoolArray]],
        spread: npt.NDArray[np.int8] | None,
        inter_pod: npt.NDArray[np.int8] | None,
    ) -> None:
        self.names = names
        self.slots = slots
        self.stage = stage
        self.node_filters = node_filters
        self.fit_failures = fit_failures
        self.spread = spread
        self.inter_pod = inter_pod
        self.gpu_topology: npt.NDArray[np.int8] | None = None
        self.load: npt.NDArray[np.int8] | None = None
        self.headroom_min_gpus = 0  # the profile's, for the Headroom reason
        self.feasible_slots: IntArray = np.zeros(0, dtype=np.int64)
        self.total: npt.NDArray[np.int32] = np.zeros(0, dtype=np.int32)
        self.plugin_scores: dict[str, npt.NDArray[np.uint8]] = {}

    def reasons_of(self, slot: int) -> tuple[str, ...]:
        stage = int(self.stage[slot])
        if stage == 0:
            return ()
        if stage < STAGE_NODE_PORTS:
            return (self.node_filters.reasons[int(self.node_filters.reason_id[slot])],)
        if stage == STAGE_NODE_PORTS:
            return (node_ports.REASON,)
        if stage == STAGE_NODE_RESOURCES_FIT:
            return tuple(reason for reason, mask in self.fit_failures if mask[slot])
        if stage == STAGE_POD_TOPOLOGY_SPREAD:
            assert self.spread is not None
            return (topology_spread.REASONS[int(self.spread[slot])],)
        if stage == STAGE_NODE_AFFINITY_PREFILTER:
            return (node_affinity.REASON_NOT_PINNED,)
        if stage == gpu_topology.STAGE:
            assert self.gpu_topology is not None
            return (gpu_topology.REASONS[int(self.gpu_topology[slot])],)
        if stage == load_aware.STAGE:
            assert self.load is not None
            return (load_aware.REASONS[int(self.load[slot])],)
        if stage == headroom.STAGE:
            return (headroom.reason(self.headroom_min_gpus),)
        assert self.inter_pod is not None
        return (inter_pod_affinity.REASONS[int(self.inter_pod[slot])],)

    def reason_counts(self) -> dict[str, int]:
        """Counts per reason over all failing nodes, computed with array operations."""
        counts: dict[str, int] = {}
        stage = self.stage[self.slots]

        def add(reason: str, count: int) -> None:
            if count:
                counts[reason] = counts.get(reason, 0) + count

        static = self.slots[(stage > 0) & (stage < STAGE_NODE_PORTS)]
        if len(static):
            ids = np.bincount(
                self.node_filters.reason_id[static], minlength=len(self.node_filters.reasons)
            )
            for index, reason in enumerate(self.node_filters.reasons):
                add(reason, int(ids[index]))
        add(node_ports.REASON, int((stage == STAGE_NODE_PORTS).sum()))
        add(node_affinity.REASON_NOT_PINNED, int((stage == STAGE_NODE_AFFINITY_PREFILTER).sum()))
        fit_slots = self.slots[stage == STAGE_NODE_RESOURCES_FIT]
        for reason, mask in self.fit_failures:
            add(reason, int(mask[fit_slots].sum()))
        for stage_code, codes, names in (
            (STAGE_POD_TOPOLOGY_SPREAD, self.spread, topology_spread.REASONS),
            (STAGE_INTER_POD_AFFINITY, self.inter_pod, inter_pod_affinity.REASONS),
            (gpu_topology.STAGE, self.gpu_topology, gpu_topology.REASONS),
            (load_aware.STAGE, self.load, load_aware.REASONS),
        ):
            if codes is None:
                continue
            chosen = codes[self.slots[stage == stage_code]]
            for code, reason in names.items():
                add(reason, int((chosen == code).sum()))
        kept = int((stage == headroom.STAGE).sum())
        if kept:
            add(headroom.reason(self.headroom_min_gpus), kept)
        return counts


class ScheduleResult:
    """The outcome for one pod: the chosen node (or None), a kube-style message, diagnosis.

    `message` is "" when a node was chosen. `diagnosis()` builds per-node verdicts lazily
    (it is only needed for explain output and events), keyed and ordered by node name.
    """

    __slots__ = ("_evaluation", "feasible_nodes", "message", "node", "pod", "warnings")

    def __init__(
        self,
        pod: str,
        node: str | None,
        message: str,
        warnings: tuple[str, ...] = (),
        evaluation: _Evaluation | None = None,
        feasible_nodes: int = 0,
    ) -> None:
        self.pod = pod
        self.node = node
        self.message = message
        self.warnings = warnings
        self.feasible_nodes = feasible_nodes
        self._evaluation = evaluation

    @property
    def scheduled(self) -> bool:
        return self.node is not None

    def discard_diagnosis(self) -> None:
        """Free the per-node arrays (a few KiB per 1000 nodes) once no diagnosis is needed."""
        self._evaluation = None

    def reason_counts(self) -> dict[str, int]:
        """Filter failure reasons counted over nodes (empty when no filter ran)."""
        return {} if self._evaluation is None else self._evaluation.reason_counts()

    def diagnosis(self) -> dict[str, NodeDiagnosis]:
        evaluation = self._evaluation
        if evaluation is None:
            return {}
        position = {int(slot): i for i, slot in enumerate(evaluation.feasible_slots)}
        out: dict[str, NodeDiagnosis] = {}
        for slot in evaluation.slots:
            slot = int(slot)
            name = evaluation.names[slot]
            index = position.get(slot)
            if index is None:
                stage = int(evaluation.stage[slot])
                out[name] = NodeDiagnosis(
                    feasible=False,
                    reasons=evaluation.reasons_of(slot),
                    score=0,
                    failed_plugin=node_filters.STAGE_PLUGINS.get(stage)
                    or {
                        gpu_topology.STAGE: gpu_topology.NAME,
                        load_aware.STAGE: load_aware.NAME,
                        headroom.STAGE: headroom.NAME,
                    }.get(stage),
                )
            else:
                out[name] = NodeDiagnosis(
                    feasible=True,
                    reasons=(),
                    score=int(evaluation.total[index]),
                    plugin_scores={
                        plugin: int(scores[index])
                        for plugin, scores in evaluation.plugin_scores.items()
                    },
                )
        return dict(sorted(out.items()))

    def __repr__(self) -> str:
        return f"ScheduleResult({self.pod} -> {self.node or self.message})"


def _unschedulable_without_filters(pod: Pod) -> str | None:
    if pod.scheduling_gates:
        return SCHEDULING_GATED_MESSAGE
    if pod.blockers:
        return "; ".join(pod.blockers)
    return None


def schedule_one(
    pod: Pod, snapshot: ClusterSnapshot, profile: SchedulerProfile | None = None
) -> ScheduleResult:
    """Decide where `pod` goes in `snapshot` (no side effects; call `snapshot.assume` to place)."""
    profile = profile or default_profile()
    refused = _unschedulable_without_filters(pod)
    if refused is not None:
        return ScheduleResult(pod.key, None, refused, pod.warnings)
    if snapshot.node_count == 0:
        return ScheduleResult(pod.key, None, NO_NODES_MESSAGE, pod.warnings)

    alive = snapshot.alive
    slots = np.flatnonzero(alive).astype(np.int64)
    if pod.required_node_names is not None and not pod.required_node_names:
        message = fit_error_message(len(slots), {}) + f" {node_affinity.REASON_CONFLICT}."
        return ScheduleResult(pod.key, None, message, pod.warnings)
    static = node_filters.evaluate(pod, snapshot)
    stage = static.stage.copy()
    ports = node_ports.conflicts(pod, snapshot)
    if ports is not None:
        stage[(stage == 0) & ports] = STAGE_NODE_PORTS
    fit_fails, fit_failures = resources_fit.filter_nodes(pod, snapshot)
    stage[(stage == 0) & fit_fails] = STAGE_NODE_RESOURCES_FIT
    spread = topology_spread.filter_nodes(pod, snapshot, static)
    if spread is not None:
        stage[(stage == 0) & (spread > 0)] = STAGE_POD_TOPOLOGY_SPREAD
    inter_pod = inter_pod_affinity.filter_nodes(pod, snapshot)
    if inter_pod is not None:
        stage[(stage == 0) & (inter_pod > 0)] = STAGE_INTER_POD_AFFINITY
    gpu_codes = gpu_topology.filter_nodes(pod, snapshot, slots[stage[slots] == 0])
    if gpu_codes is not None:
        stage[(stage == 0) & (gpu_codes > 0)] = gpu_topology.STAGE
    load_codes = load_aware.filter_nodes(pod, snapshot, slots[stage[slots] == 0])
    if load_codes is not None:
        stage[(stage == 0) & (load_codes > 0)] = load_aware.STAGE
    if pod.required_node_names is not None:
        pinned = np.zeros(snapshot.capacity, dtype=np.bool_)
        for name in pod.required_node_names:
            slot = snapshot.slot_of(name)
            if slot is not None:
                pinned[slot] = True
        stage[~pinned] = STAGE_NODE_AFFINITY_PREFILTER
    headroom_codes = headroom.filter_nodes(
        pod,
        snapshot,
        slots[stage[slots] == 0],
        profile.headroom_min_gpus,
        static.preferred_affinity if pod.preferred_node_affinity else None,
    )
    if headroom_codes is not None:
        stage[(stage == 0) & (headroom_codes > 0)] = headroom.STAGE
    evaluation = _Evaluation(
        snapshot.names_view(), slots, stage, static, fit_failures, spread, inter_pod
    )
    evaluation.gpu_topology = gpu_codes
    evaluation.load = load_codes
    evaluation.headroom_min_gpus = profile.headroom_min_gpus
    feasible = slots[stage[slots] == 0]
    evaluation.feasible_slots = feasible
    if len(feasible) == 0:
        message = fit_error_message(len(slots), evaluation.reason_counts())
        return ScheduleResult(pod.key, None, message, pod.warnings, evaluation, 0)

    plugin_scores = _score(pod, snapshot, static, feasible, profile)
    total = np.zeros(len(feasible), dtype=np.int64)
    for plugin, scores in plugin_scores.items():
        total += scores * profile.weight(plugin)
    evaluation.total = total.astype(np.int32)
    evaluation.plugin_scores = {
        plugin: scores.astype(np.uint8) for plugin, scores in plugin_scores.items()
    }
    best = _pick(pod, snapshot, feasible, total)
    return ScheduleResult(
        pod.key, snapshot.node_names[best], "", pod.warnings, evaluation, len(feasible)
    )


def _score(
    pod: Pod,
    snapshot: ClusterSnapshot,
    static: NodeFilterResult,
    feasible: IntArray,
    profile: SchedulerProfile,
) -> dict[str, IntArray]:
    scores: dict[str, IntArray] = {}
    if profile.weight(profiles.TAINT_TOLERATION):
        scores[profiles.TAINT_TOLERATION] = default_normalize(
            static.prefer_no_schedule[feasible], reverse=True
        )
    if profile.weight(profiles.NODE_AFFINITY) and pod.preferred_node_affinity:
        scores[profiles.NODE_AFFINITY] = default_normalize(
            static.preferred_affinity[feasible], reverse=False
        )
    if profile.weight(profiles.POD_TOPOLOGY_SPREAD):
        spread = topology_spread.score(pod, snapshot, static, feasible)
        if spread is not None:
            scores[profiles.POD_TOPOLOGY_SPREAD] = spread
    if profile.weight(profiles.INTER_POD_AFFINITY):
        affinity = inter_pod_affinity.score(pod, snapshot, feasible, profile)
        if affinity is not None:
            scores[profiles.INTER_POD_AFFINITY] = affinity
    if profile.weight(profiles.NODE_RESOURCES_FIT):
        scores[profiles.NODE_RESOURCES_FIT] = resources_fit.score(pod, snapshot, feasible, profile)
    if profile.weight(profiles.BALANCED_ALLOCATION):
        balanced = balanced_allocation.score(pod, snapshot, feasible, profile)
        if balanced is not None:
            scores[profiles.BALANCED_ALLOCATION] = balanced
    if profile.weight(profiles.GPU_TOPOLOGY):
        topology = gpu_topology.score(pod, snapshot, feasible)
        if topology is not None:
            scores[profiles.GPU_TOPOLOGY] = topology
    if profile.weight(profiles.LOAD_AWARE):
        load = load_aware.score(pod, snapshot, feasible)
        if load is not None:
            topology = scores.get(profiles.GPU_TOPOLOGY)
            if topology is not None:
                load = load_aware.keep_topology_order(load, topology)
            scores[profiles.LOAD_AWARE] = load
    return scores


_GOLDEN: Final = np.uint64(2654435761)
_MASK32: Final = np.uint64(0xFFFFFFFF)


def _pick(pod: Pod, snapshot: ClusterSnapshot, feasible: IntArray, total: IntArray) -> int:
    """The best-scored slot; ties broken by a stable hash of pod key and node name, then name."""
    tied = feasible[total == total.max()]
    if len(tied) == 1:
        return int(tied[0])
    pod_hash = np.uint64(zlib.crc32(pod.key.encode()))
    mixed = ((snapshot.name_hash[tied].astype(np.uint64) ^ pod_hash) * _GOLDEN) & _MASK32
    winners = tied[mixed == mixed.min()]
    if len(winners) == 1:
        return int(winners[0])
    return min((int(slot) for slot in winners), key=lambda slot: snapshot.node_names[slot])
