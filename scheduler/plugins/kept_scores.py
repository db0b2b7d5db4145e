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

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Final

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


class KeptNodeScores:
    """Per (plugin, request shape): the score of every live node slot, as of one slot version
    of the snapshot (`ClusterSnapshot.last_slot_version`)."""

    __slots__ = ("_kept", "snapshot")

    def __init__(self, snapshot: ClusterSnapshot) -> None:
        self.snapshot = snapshot
        # key -> [scores of every slot, the last slot version they include]
        self._kept: OrderedDict[Hashable, list[Any]] = OrderedDict()

    @classmethod
    def of(cls, snapshot: ClusterSnapshot) -> KeptNodeScores:
        return snapshot.attached_or_new(cls, lambda: cls(snapshot))

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
        if kept is None or len(kept[0]) != snapshot.capacity:
            values = np.zeros(snapshot.capacity, dtype=np.int64)
            live = snapshot.live_slots()
            if len(live):
                values[live] = compute(live)
            kept = self._kept[key] = [values, latest]
            if len(self._kept) > LIMIT:
                self._kept.popitem(last=False)
        else:
            self._kept.move_to_end(key)
            values = kept[0]
            if kept[1] != latest:
                changed = (snapshot.slot_version > kept[1]).nonzero()[0]
                changed = changed[snapshot.alive[changed]]  # a freed slot is never scored
                if len(changed) <= FEW:
                    for slot in changed.tolist():
                        values[slot] = compute_one(slot)
                elif len(changed):
                    values[changed] = compute(changed)
                kept[1] = latest
        out: IntArray = values[feasible]
        return out
