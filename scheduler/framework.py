"""One scheduling cycle: run the registered plugins over every node, score the feasible ones,
pick one.

`schedule_one(pod, snapshot)` is the whole decision and has no side effects (a sampled cycle
only moves the round-robin start, below); the caller records a placement with
`snapshot.assume(pod, node)`. The framework knows plugins only through their
interface (`scheduler.plugins.context`): it runs the PreFilter, Filter and Score of each plugin
in `scheduler.plugins.PLUGINS` in that tuple's order (kube-scheduler's default filter order),
weights scores by the profile's weight for the plugin's name, and never names a plugin. A node
reports the reasons of the first filter it fails, so the failure message counts exactly what
kube-scheduler's would ("0/12 nodes are available: 4 Insufficient nvidia.com/gpu, ..."), and
each reason carries kube-scheduler's status code, so preemption knows where it cannot help.

Each cycle gets a `CycleContext` holding the snapshot's GPU allocator and load tracker (kept
with the snapshot across cycles, see `ClusterSnapshot.attach`) and the pod shape's pre-computed
node state; filters and scores answer for all nodes at once over the snapshot's per-node arrays.

Node sampling (kube-scheduler's `percentageOfNodesToScore`, docs/scheduling.md): a placement
cycle (``sample=True``: simulate and the runtime) walks the nodes from where the previous one
stopped (round robin, kept with the snapshot in a `NodeSampler`), stops at the profile's number
of feasible nodes and scores only those; the filters still answer for every node at once (one
array operation is cheaper than choosing which nodes to ask), so only scoring and the
diagnosis shrink. Clusters under 100 nodes are scored whole, and pods that request GPUs use the
profile's own GPU percentage (default 100: every feasible node). Callers that read the verdict
of a named node (extender, preemption, reservation) keep the default ``sample=False``.

Ties between equally scored nodes are broken by a stable hash of the pod's `namespace/name` and
the node's name (then by node name): deterministic across runs and processes, yet different pods
of one shape spread over equal nodes instead of all landing on the alphabetically first one.
kube-scheduler picks uniformly at random among ties instead.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from gputopo.scheduler.gpu_alloc import GpuAllocator, pod_gpu_count, pod_mig_requests
from gputopo.scheduler.model import Pod
from gputopo.scheduler.plugins import PLUGINS
from gputopo.scheduler.plugins.context import (
    CycleContext,
    FilterPlugin,
    Plugin,
    PreFilterPlugin,
    ScorePlugin,
)
from gputopo.scheduler.plugins.verdict import FilterVerdict, MaskVerdict, unresolvable
from gputopo.scheduler.prometheus_load import LoadTracker
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
    # kube-scheduler's UnschedulableAndUnresolvable: no eviction makes this node fit the pod.
    unresolvable: bool = False


class _Evaluation:
    """The verdicts one cycle produced, kept so per-node diagnosis can be built on demand."""

    __slots__ = (
        "_stage",
        "capacity",
        "feasible_slots",
        "names",
        "plugin_scores",
        "slots",
        "stage_plugins",
        "total",
        "verdicts",
        "walk",
    )

    def __init__(
        self,
        names: tuple[str, ...],
        slots: IntArray,
        capacity: int,
        verdicts: Sequence[FilterVerdict | None],
        stage_plugins: Sequence[str],
    ) -> None:
        self.names = names
        self.slots = slots
        self.capacity = capacity
        # Filters in order (index 1..), then the PreFilter's nodes left out (the last index).
        self.verdicts = verdicts
        self.stage_plugins = stage_plugins
        self._stage: npt.NDArray[np.int8] | None = None
        self.feasible_slots: IntArray = np.zeros(0, dtype=np.int64)
        # Per feasible slot, the weighted total and each plugin's score (0..100): the cycle's
        # own int64 arrays, narrowed by `compact` when the diagnosis is kept.
        self.total: npt.NDArray[np.integer[Any]] = np.zeros(0, dtype=np.int32)
        self.plugin_scores: dict[str, npt.NDArray[np.integer[Any]]] = {}
        # A sampled cycle's walk (first slot, last slot): only those nodes are diagnosed.
        self.walk: tuple[int, int] | None = None

    def compact(self) -> None:
        """Narrow the kept scores (int32 totals, uint8 plugin scores): an eighth of the memory
        for a diagnosis that outlives its cycle."""
        self.total = self.total.astype(np.int32)
        self.plugin_scores = {
            name: scores.astype(np.uint8) for name, scores in self.plugin_scores.items()
        }

    def walked(self) -> IntArray:
        """The slots this cycle looked at, ascending: all live ones unless it sampled."""
        if self.walk is None:
            return self.slots
        return walked_slots(self.slots, *self.walk)

    @property
    def stage(self) -> npt.NDArray[np.int8]:
        """Per slot, the index of the verdict a node reports: the first filter it fails, or the
        PreFilter that left it out (0: feasible). Built only when a failure is explained."""
        if self._stage is None:
            # The first failing verdict is the one with the largest (top - index): a running
            # maximum in two array operations per verdict, a third of what writing each
            # verdict's failing nodes through a boolean mask costs (numpy 2.4, 5000 nodes).
            *filters, left_out = self.verdicts
            top = len(filters)  # at most _MAX_FILTERS + 1: fits an int8
            ranked = np.zeros(self.capacity, dtype=np.int8)
            step = np.empty(self.capacity, dtype=np.int8)
            for index, verdict in enumerate(filters):
                if index and verdict is not None:
                    np.multiply(verdict.failing.view(np.int8), np.int8(top - index), out=step)
                    np.maximum(ranked, step, out=ranked)
            stage = np.subtract(np.int8(top), ranked)
            stage *= ranked != 0
            if left_out is not None:  # a node a PreFilter left out reports that first
                np.putmask(stage, left_out.failing, np.int8(top))
            self._stage = stage
        return self._stage

    def diagnose(self, slot: int) -> NodeDiagnosis:
        """The verdict of a node that failed a filter."""
        index = int(self.stage[slot])
        verdict = self.verdicts[index]
        assert verdict is not None
        reasons = verdict.reasons_of(slot)
        return NodeDiagnosis(
            feasible=False,
            reasons=tuple(reason.message for reason in reasons),
            score=0,
            failed_plugin=self.stage_plugins[index],
            unresolvable=any(reason.unresolvable for reason in reasons),
        )

    def reason_counts(self) -> dict[str, int]:
        """Counts per reason over all failing nodes, computed with array operations."""
        counts: dict[str, int] = {}
        stage = self.stage[self.slots]
        per_stage = np.bincount(stage, minlength=len(self.verdicts))
        for index in np.flatnonzero(per_stage[1:]).tolist():
            verdict = self.verdicts[index + 1]
            assert verdict is not None
            for reason, count in verdict.count(self.slots[stage == index + 1]):
                counts[reason.message] = counts.get(reason.message, 0) + count
        return counts


class ScheduleResult:
    """The outcome for one pod: the chosen node (or None), a kube-style message, diagnosis.

    `message` is "" when a node was chosen. `diagnosis()` builds per-node verdicts lazily
    (it is only needed for explain output and events), keyed and ordered by node name.
    """

    __slots__ = ("_evaluation", "claims", "feasible_nodes", "message", "node", "pod", "warnings")

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
        # DRA: pod claim name -> its allocation results (wire form), once placed
        self.claims: dict[str, list[dict[str, str]]] | None = None

    @property
    def scheduled(self) -> bool:
        return self.node is not None

    def keep_diagnosis(self) -> None:
        """Keep the per-node diagnosis compactly (for results held after the cycle)."""
        if self._evaluation is not None:
            self._evaluation.compact()

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
        for slot in evaluation.walked().tolist():
            name = evaluation.names[slot]
            index = position.get(slot)
            if index is None:
                out[name] = evaluation.diagnose(slot)
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


# kube-scheduler's minFeasibleNodesToFind and minFeasibleNodesPercentageToFind.
MIN_FEASIBLE_NODES_TO_FIND: Final = 100
MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND: Final = 5


def num_feasible_nodes_to_find(percentage: int, num_all_nodes: int) -> int:
    """How many feasible nodes a cycle looks for among ``num_all_nodes`` (kube-scheduler's
    `numFeasibleNodesToFind`): all under 100 nodes; ``percentage`` 0 is the adaptive default,
    50 % minus 1 % per 125 nodes, at least 5 %; never fewer than 100."""
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND:
        return num_all_nodes
    if percentage == 0:
        percentage = max(50 - num_all_nodes // 125, MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND)
    count = num_all_nodes * min(percentage, 100) // 100
    return max(count, MIN_FEASIBLE_NODES_TO_FIND)


def requests_gpus(pod: Pod) -> bool:
    """A pod whose placement the GPU topology decides: it requests whole GPUs or MIG slices,
    or devices through DRA ResourceClaims (whose choice of devices is topology-scored too)."""
    return pod_gpu_count(pod) > 0 or bool(pod_mig_requests(pod)) or bool(pod.resource_claims)


def percentage_of_nodes_to_score(pod: Pod, profile: SchedulerProfile) -> int:
    """The profile's percentage for this pod: its GPU one for pods that request GPUs."""
    if requests_gpus(pod):
        return profile.gpu_percentage_of_nodes_to_score
    return profile.percentage_of_nodes_to_score


class NodeSampler:
    """Where the next placement cycle starts walking the nodes (kube-scheduler's
    `nextStartNodeIndex`, kept here as a node slot: the one after the last node the previous
    sampled cycle looked at), kept with the snapshot so consecutive pods spread their samples
    over the whole cluster. Deterministic: the same cycles in the same order start at the same
    nodes."""

    __slots__ = ("next_slot",)

    def __init__(self) -> None:
        self.next_slot = 0

    @classmethod
    def of(cls, snapshot: ClusterSnapshot) -> NodeSampler:
        return snapshot.attached_or_new(cls, cls)


def sample_feasible(feasible: IntArray, to_find: int, start: int) -> tuple[IntArray, int]:
    """The first ``to_find`` of the ``feasible`` slots (ascending) met walking the slots from
    ``start`` upward and wrapping around, in ascending order, and the last one met (where
    the walk stopped). Needs ``0 < to_find <= len(feasible)``."""
    first = int(feasible.searchsorted(start))
    end = first + to_find
    if end <= len(feasible):
        return feasible[first:end], int(feasible[end - 1])
    wrapped = end - len(feasible)
    return np.concatenate((feasible[:wrapped], feasible[first:])), int(feasible[wrapped - 1])


def walked_slots(slots: IntArray, start: int, last: int) -> IntArray:
    """The ``slots`` a walk from slot ``start`` to slot ``last`` (inclusive, wrapping) passed."""
    if start <= last:
        walked: IntArray = slots[(slots >= start) & (slots <= last)]
    else:
        walked = slots[(slots >= start) | (slots <= last)]
    return walked


def _unschedulable_without_filters(pod: Pod) -> str | None:
    if pod.scheduling_gates:
        return SCHEDULING_GATED_MESSAGE
    if pod.blockers:
        return "; ".join(pod.blockers)
    return None


@dataclass(frozen=True, slots=True)
class _Extensions:
    """A plugin tuple split by extension point, in the tuple's order."""

    pre_filters: tuple[PreFilterPlugin, ...]
    filters: tuple[FilterPlugin, ...]
    scores: tuple[ScorePlugin, ...]
    # Per verdict index: "" (unused), each filter's name, "" (the PreFilters' left-out nodes).
    stage_plugins: tuple[str, ...]
    # How many filters, from the first, say their verdict is node-only (`FilterPlugin`).
    node_only: int


# A node's failure stage is an int8 (`_Evaluation.stage`): every filter, the PreFilters' stage
# and "feasible" must fit.
_MAX_FILTERS: Final = 125


@functools.lru_cache(maxsize=16)
def _extensions(plugins: tuple[Plugin, ...]) -> _Extensions:
    filters = tuple(p for p in plugins if isinstance(p, FilterPlugin))
    if len(filters) > _MAX_FILTERS:
        raise ValueError(f"{len(filters)} filter plugins; at most {_MAX_FILTERS} are supported")
    node_only = 0
    while node_only < len(filters) and getattr(filters[node_only], "node_only", False) is True:
        node_only += 1
    return _Extensions(
        tuple(p for p in plugins if isinstance(p, PreFilterPlugin)),
        filters,
        tuple(p for p in plugins if isinstance(p, ScorePlugin)),
        ("", *(plugin.name for plugin in filters), ""),
        node_only,
    )


def _node_only_failed(ctx: CycleContext, extensions: _Extensions) -> BoolArray:
    """Per slot, whether the node fails one of the leading node-only filters or holds no node:
    the same for every pod of a shape, so kept with it (`CycleContext.per_shape`, under this
    plugin tuple's identity; the kept entry holds the tuple, so its id is not reused)."""
    kept = ctx.per_shape(
        f"framework/node-only/{id(extensions)}",
        lambda c: (extensions, _combine_node_only(c, extensions)),
    )
    if kept[0] is extensions:
        return kept[1]
    return _combine_node_only(ctx, extensions)


def _combine_node_only(ctx: CycleContext, extensions: _Extensions) -> BoolArray:
    failed = ~ctx.snapshot.alive
    for filter_plugin in extensions.filters[: extensions.node_only]:
        verdict = filter_plugin.filter(ctx)
        if verdict is not None:
            failed |= verdict.failing
    failed.flags.writeable = False
    return failed


_WEIGHTED_CACHE: dict[
    tuple[int, int], tuple[object, object, tuple[tuple[ScorePlugin, int], ...]]
] = {}


def _weighted(
    profile: SchedulerProfile, extensions: _Extensions
) -> tuple[tuple[ScorePlugin, int], ...]:
    """The score plugins the profile weighs (weight not 0), with their weights; kept per
    profile object (a profile is immutable); the entry holds both objects, so an id is never
    reused while its entry lives."""
    key = (id(profile), id(extensions))
    cached = _WEIGHTED_CACHE.get(key)
    if cached is not None and cached[0] is profile and cached[1] is extensions:
        return cached[2]
    weighted = tuple(
        (plugin, profile.weight(plugin.name))
        for plugin in extensions.scores
        if profile.weight(plugin.name)
    )
    if len(_WEIGHTED_CACHE) >= 64:
        _WEIGHTED_CACHE.clear()
    _WEIGHTED_CACHE[key] = (profile, extensions, weighted)
    return weighted


_DEFAULT_EXTENSIONS: Final = _extensions(PLUGINS)


def schedule_one(
    pod: Pod,
    snapshot: ClusterSnapshot,
    profile: SchedulerProfile | None = None,
    plugins: tuple[Plugin, ...] = PLUGINS,
    *,
    sample: bool = False,
) -> ScheduleResult:
    """Decide where `pod` goes in `snapshot` (call `snapshot.assume` to place).

    ``plugins``: the registry by default; a test or an embedder may run another tuple.
    ``sample``: a placement cycle, which scores only the profile's share of the feasible nodes
    (see the module docstring) and advances the snapshot's `NodeSampler`, its one side effect;
    the diagnosis then covers the nodes walked. Without it every node is scored and diagnosed.
    """
    profile = profile or default_profile()
    refused = _unschedulable_without_filters(pod)
    if refused is not None:
        return ScheduleResult(pod.key, None, refused, pod.warnings)
    if snapshot.node_count == 0:
        return ScheduleResult(pod.key, None, NO_NODES_MESSAGE, pod.warnings)

    extensions = _DEFAULT_EXTENSIONS if plugins is PLUGINS else _extensions(plugins)
    ctx = CycleContext(
        pod, snapshot, profile, GpuAllocator.of(snapshot), snapshot.attached(LoadTracker)
    )
    slots = snapshot.live_slots()
    # Free slots never pass, nor nodes the leading node-only filters refuse (kept per shape).
    failed = _node_only_failed(ctx, extensions).copy()
    ctx.slots, ctx.failed = slots, failed
    filters = extensions.filters
    verdicts: list[FilterVerdict | None] = [None] * (len(filters) + 2)
    stage_plugins = extensions.stage_plugins

    considered: npt.NDArray[np.bool_] | None = None
    restricted_by: list[str] = []
    for pre_filter in extensions.pre_filters:
        outcome = pre_filter.pre_filter(ctx)
        if outcome is None:
            continue
        if outcome.refusal is not None:
            message = fit_error_message(len(slots), {}) + f" {outcome.refusal}."
            return ScheduleResult(pod.key, None, message, pod.warnings)
        if outcome.node_names is not None:
            named = np.zeros(snapshot.capacity, dtype=np.bool_)
            for name in outcome.node_names:
                slot = snapshot.slot_of(name)
                if slot is not None:
                    named[slot] = True
            considered = named if considered is None else considered & named
            restricted_by.append(pre_filter.name)
    if considered is not None:
        # kube-scheduler reports the nodes a PreFilter left out with the plugins' names.
        left_out = ~considered
        index = len(filters) + 1
        failed |= left_out
        reason = unresolvable(f"node(s) didn't satisfy plugin(s) [{', '.join(restricted_by)}]")
        verdicts[index] = MaskVerdict([(reason, left_out)])
        stage_plugins = (*stage_plugins[:index], ", ".join(restricted_by))

    node_only = extensions.node_only
    for index, filter_plugin in enumerate(filters, 1):
        verdict = filter_plugin.filter(ctx)
        if verdict is not None:
            if index > node_only:  # the leading node-only ones are in `failed` already
                failed |= verdict.failing
            verdicts[index] = verdict

    feasible = (~failed).nonzero()[0]  # not np.flatnonzero: a third of its cost on 1-D
    walk = None
    if sample and len(slots) >= MIN_FEASIBLE_NODES_TO_FIND:
        considered_count = (
            len(slots) if considered is None else int(np.count_nonzero(considered[slots]))
        )
        to_find = num_feasible_nodes_to_find(
            percentage_of_nodes_to_score(pod, profile), considered_count
        )
        if 0 < to_find < len(feasible):
            sampler = NodeSampler.of(snapshot)
            start = sampler.next_slot
            feasible, last = sample_feasible(feasible, to_find, start)
            sampler.next_slot = last + 1
            walk = (start, last)
    evaluation = _Evaluation(
        snapshot.names_view(), slots, snapshot.capacity, verdicts, stage_plugins
    )
    evaluation.walk = walk
    evaluation.feasible_slots = feasible
    if len(feasible) == 0:
        message = fit_error_message(len(slots), evaluation.reason_counts())
        return ScheduleResult(pod.key, None, message, pod.warnings, evaluation, 0)

    total = np.zeros(len(feasible), dtype=np.int64)
    for score_plugin, weight in _weighted(profile, extensions):
        scores = score_plugin.score(ctx, feasible)
        if scores is not None:
            ctx.scores[score_plugin.name] = scores
            total += scores * weight if weight != 1 else scores
    evaluation.total = total
    # Shown in the profile's order of weights.
    evaluation.plugin_scores = {
        name: ctx.scores[name] for name in profile.weights if name in ctx.scores
    }
    best = _pick(pod, snapshot, feasible, total)
    return ScheduleResult(
        pod.key, snapshot.node_names[best], "", pod.warnings, evaluation, len(feasible)
    )


_GOLDEN: Final = np.uint32(2654435761)  # Knuth's multiplicative hash; uint32 wraps modulo 2**32


def _pick(pod: Pod, snapshot: ClusterSnapshot, feasible: IntArray, total: IntArray) -> int:
    """The best-scored slot; ties broken by a stable hash of pod key and node name, then name."""
    tied = feasible[total == total.max()]
    if len(tied) == 1:
        return int(tied[0])
    mixed = snapshot.name_hash[tied] ^ np.uint32(zlib.crc32(pod.key.encode()))
    mixed *= _GOLDEN
    winners = tied[mixed == mixed.min()]
    if len(winners) == 1:
        return int(winners[0])
    return min((int(slot) for slot in winners), key=lambda slot: snapshot.node_names[slot])
