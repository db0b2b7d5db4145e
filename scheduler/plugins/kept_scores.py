"""Scores kept across cycles for the nodes that did not change.

A node's GpuTopology score depends only on that node (its free GPUs, as the GPU allocator
summarises them) and on what the pod asks for, so pods of one request shape would compute the
same score for every node that nothing touched since. A `KeptScores` (attached to the
snapshot) keeps, per plugin and request shape, the last score of every node slot with the
version of the slot it was computed at, and recomputes only the slots whose version has moved
on: a cycle then costs a few array lookups plus the work for the nodes that changed, not the
work for every feasible node. The caller passes the versions (GpuTopology: the allocator's
`summary_version`). At most `LIMIT` shapes are kept, the least recently used dropped first.

NodeResourcesFit's and BalancedAllocation's scores are per node too, but keeping only the
scored slots did not pay (docs/performance.md): a CPU pod's sampled nodes nearly always include
some changed since its shape last looked, and rescoring a few nodes takes the same few dozen
array operations as scoring hundreds. `KeptNodeScores` keeps them for every node instead, as of
one snapshot slot version: what changed since is found with one comparison over the slot
versions, usually a node or two, rescored in plain Python (the plugin's one-node function, held
equal to its array one by a property test).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from typing import Final

import numpy as np

from gputopo.scheduler.snapshot import ClusterSnapshot, IntArray

# Two int64 arrays per shape: 80 KB per shape at 5000 nodes, 5 MB at the limit.
LIMIT: Final = 64


class KeptScores:
    """Per (plugin, request shape): the score of every slot and the slot version it is for."""

    __slots__ = ("_kept",)

    def __init__(self) -> None:
        self._kept: OrderedDict[Hashable, tuple[IntArray, IntArray]] = OrderedDict()

    @classmethod
    def of(cls, snapshot: ClusterSnapshot) -> KeptScores:
        return snapshot.attached_or_new(cls, cls)

    def scores(
        self,
        key: Hashable,
        slots: IntArray,
        versions: IntArray,
        compute: Callable[[IntArray], IntArray],
    ) -> IntArray:
        """The scores of ``slots`` for ``key``: kept ones where ``versions[slot]`` is still the
        version they were computed at, ``compute(stale_slots)`` for the others (kept too)."""
        kept = self._kept.get(key)
        capacity = len(versions)
        if kept is None or len(kept[0]) != capacity:
            kept = (np.zeros(capacity, dtype=np.int64), np.full(capacity, -1, dtype=np.int64))
            self._kept[key] = kept
            if len(self._kept) > LIMIT:
                self._kept.popitem(last=False)
        else:
            self._kept.move_to_end(key)
        values, seen = kept
        current = versions[slots]
        stale_mask = seen[slots] != current
        if np.count_nonzero(stale_mask):
            stale = slots[stale_mask]
            values[stale] = compute(stale)
            seen[stale] = current[stale_mask]
        out: IntArray = values[slots]
        return out


# Up to this many changed nodes, the plugin's one-node function beats its array operations.
FEW: Final = 4
# A shape not kept is kept when it comes back within this many shapes not kept.
RECENT: Final = 8
# Scores kept per plugin, all shapes together (one int64 each: 8 MiB): `LIMIT` shapes at
# least, more on a small cluster, up to `NODE_SHAPES_LIMIT` (reached at 256 node slots), where a
# workload of many shapes in turn would otherwise drop each before it comes back.
NODE_SCORES_BUDGET: Final = 1 << 20
NODE_SHAPES_LIMIT: Final = 4096


class _NodeScores:
    """One shape's scores of every node slot and the last snapshot slot version they include."""

    __slots__ = ("as_of", "values")

    def __init__(self, values: IntArray, as_of: int) -> None:
        self.values = values
        self.as_of = as_of


class KeptNodeScores:
    """Per (plugin, request shape): the score of every live node slot, as of one slot version
    of the snapshot (`ClusterSnapshot.last_slot_version`).

    A shape is kept when it comes back within `RECENT` shapes not kept and its cycle scores at
    least half the nodes (every GPU pod's on a cluster of GPU nodes, every pod's under 100
    nodes); until then its nodes are scored afresh, so many shapes in turn (200 CPU pod shapes)
    cost about what they did without keeping, and a large cluster's sampled cycles nothing
    (`worth_asking`). A kept shape unused for a while catches up on the nodes changed since,
    never more work than scoring every node."""

    __slots__ = ("_kept", "_recent", "snapshot")

    def __init__(self, snapshot: ClusterSnapshot) -> None:
        self.snapshot = snapshot
        self._kept: OrderedDict[Hashable, _NodeScores] = OrderedDict()
        # The last shapes scored without being kept.
        self._recent: deque[Hashable] = deque(maxlen=RECENT)

    @classmethod
    def of(cls, snapshot: ClusterSnapshot) -> KeptNodeScores:
        return snapshot.attached_or_new(cls, lambda: cls(snapshot))

    @staticmethod
    def keeps_for(snapshot: ClusterSnapshot, feasible: IntArray) -> bool:
        """Whether a cycle scoring ``feasible`` may start keeping its shape's scores: one that
        scores at least half the nodes (a sample, or a pod few nodes take, is scored afresh:
        keeping would cost a score of every node)."""
        return 2 * len(feasible) >= snapshot.node_count

    @classmethod
    def worth_asking(cls, snapshot: ClusterSnapshot, feasible: IntArray) -> bool:
        """Cheap, for the plugins to ask before building a shape's key: whether `scores` may
        serve this cycle (it may start keeping, or some shape is kept). Else they score afresh:
        a large cluster's sampled cycles pay nothing for this class."""
        if cls.keeps_for(snapshot, feasible):
            return True
        kept = snapshot.attached(cls)
        return kept is not None and bool(kept._kept)

    def scores(
        self,
        key: Hashable,
        feasible: IntArray,
        compute: Callable[[IntArray], IntArray],
        compute_one: Callable[[int], int],
    ) -> IntArray:
        """The scores of ``feasible`` for ``key``: ``compute(slots)`` scores node slots with
        arrays, ``compute_one(slot)`` one slot in plain Python; both for live slots only, and
        what they return must depend on nothing but the pod's shape and each slot's node and
        pods (a change to either moves the slot's version)."""
        snapshot = self.snapshot
        latest = snapshot.last_slot_version
        kept = self._kept.get(key)
        if kept is None or len(kept.values) != snapshot.capacity:
            if key not in self._recent or not self.keeps_for(snapshot, feasible):
                # A shape met for the first time in a while, or a sample (or few feasible
                # nodes): keeping it would cost a score of every node and the bookkeeping,
                # more than this cycle's work.
                self._recent.append(key)
                return compute(feasible)
            live = snapshot.live_slots()
            values = np.zeros(snapshot.capacity, dtype=np.int64)
            values[live] = compute(live)
            self._kept[key] = _NodeScores(values, latest)
            shapes = min(NODE_SHAPES_LIMIT, max(LIMIT, NODE_SCORES_BUDGET // snapshot.capacity))
            if len(self._kept) > shapes:
                self._kept.popitem(last=False)
        else:
            values = kept.values
            if kept.as_of != latest:
                changed = (snapshot.slot_version > kept.as_of).nonzero()[0]
                changed = changed[snapshot.alive[changed]]  # a freed slot is never scored
                if len(changed) <= FEW:
                    for slot in changed.tolist():
                        values[slot] = compute_one(slot)
                else:
                    values[changed] = compute(changed)
                kept.as_of = latest
            self._kept.move_to_end(key)
        out: IntArray = values[feasible]
        return out
