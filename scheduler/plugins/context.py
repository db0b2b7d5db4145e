"""The plugin interface: a plugin has a name and implements any of PreFilter, Filter and Score;
each call gets the cycle's `CycleContext`, kube-scheduler's CycleState in gputopo's shape.

Every extension point answers for all nodes at once, over the snapshot's per-node arrays indexed
by node slot: a filter returns a `FilterVerdict` (which nodes fail, why, and whether preemption
can help), a score returns 0..100 per feasible node. The framework runs the plugins of
`scheduler.plugins.PLUGINS` in that tuple's order and never names one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar, cast, runtime_checkable

import numpy as np

from gputopo.scheduler.gpu_alloc import GpuAllocator
from gputopo.scheduler.model import Pod
from gputopo.scheduler.plugins.verdict import FilterVerdict
from gputopo.scheduler.prometheus_load import LoadTracker
from gputopo.scheduler.scheduling_profile import SchedulerProfile
from gputopo.scheduler.snapshot import BoolArray, ClusterSnapshot, IntArray

_T = TypeVar("_T")


class CycleContext:
    """What one scheduling cycle's plugins read: the pod, the snapshot, the profile, the GPU
    allocator, the load view and the pre-computed node state; and, as the cycle goes on, which
    nodes still pass and the scores computed so far.

    The allocator and the load tracker outlive the cycle (they are attached to the snapshot,
    see `ClusterSnapshot.attach`); the context hands them to plugins, so no plugin looks them up.
    """

    __slots__ = (
        "_shape",
        "failed",
        "gpus",
        "load",
        "pod",
        "profile",
        "scores",
        "slots",
        "snapshot",
    )

    def __init__(
        self,
        pod: Pod,
        snapshot: ClusterSnapshot,
        profile: SchedulerProfile,
        gpus: GpuAllocator,
        load: LoadTracker | None,
    ) -> None:
        self.pod = pod
        self.snapshot = snapshot
        self.profile = profile
        self.gpus = gpus
        self.load = load
        self._shape: dict[str, object] | None = None
        # The live node slots, and per slot whether the node failed a filter run so far or
        # holds no node (the framework's to write).
        self.slots: IntArray = np.zeros(0, dtype=np.int64)
        self.failed: BoolArray = np.zeros(0, dtype=np.bool_)
        # Scores already computed this cycle, by plugin name (a later score may read one).
        self.scores: dict[str, IntArray] = {}

    def per_shape(self, key: str, compute: Callable[[CycleContext], _T]) -> _T:
        """Pre-computed node state that every pod of this pod's shape (nodeName, nodeSelector,
        node affinity, tolerations) shares: ``compute(ctx)`` once per shape and ``key`` (the
        plugin's name), kept with the snapshot until a node changes. The node-only filters keep
        their per-node verdicts here."""
        shape = self._shape
        if shape is None:
            cached = self.snapshot.static_cache().get(self.pod.static_key)
            if not isinstance(cached, dict):
                cached = {}
                self.snapshot.remember_static(self.pod.static_key, cached)
            shape = self._shape = cached
        value = shape.get(key)
        if value is None:
            value = shape[key] = compute(self)
        return cast(_T, value)

    def passing(self) -> IntArray:
        """The slots that pass every filter run so far."""
        passing: IntArray = (~self.failed).nonzero()[0]
        return passing


@runtime_checkable
class Plugin(Protocol):
    @property
    def name(self) -> str:
        """The plugin's name: in reasons, diagnosis and the profile's `scores` weights."""
        ...


@dataclass(frozen=True, slots=True)
class PreFilterResult:
    """A PreFilter's answer: only ``node_names`` are considered (the others report "node(s)
    didn't satisfy plugin(s) [<name>]", unresolvable), or ``refusal``: no node can take the pod
    whatever it holds, and the cycle ends with this reason."""

    node_names: frozenset[str] | None = None
    refusal: str | None = None


@runtime_checkable
class PreFilterPlugin(Plugin, Protocol):
    def pre_filter(self, ctx: CycleContext) -> PreFilterResult | None:
        """None: every node is considered."""
        ...


@runtime_checkable
class FilterPlugin(Plugin, Protocol):
    def filter(self, ctx: CycleContext) -> FilterVerdict | None:
        """The verdict for every node slot; None when the filter does not apply to the pod.

        A node counts as failing here only if it passed the filters before this one (a node
        reports the first filter it fails); ``ctx.passing()`` names those nodes for filters
        that are cheaper when they look at fewer.

        A filter whose verdict depends only on the pod's shape (`Pod.static_key`) and the nodes
        says so with a class attribute ``node_only = True`` (and keeps its verdict with
        `CycleContext.per_shape`): the framework combines the verdicts of the node-only filters
        that come first in the plugin order once per shape instead of once per cycle."""
        ...


@runtime_checkable
class ScorePlugin(Plugin, Protocol):
    def score(self, ctx: CycleContext, feasible: IntArray) -> IntArray | None:
        """Scores 0..100 for the ``feasible`` slots (normalised), or None: no opinion."""
        ...
