"""Scores kept across cycles for the nodes that did not change.

A node's GpuTopology score depends only on that node (its free GPUs, as the GPU allocator
summarises them) and on what the pod asks for, so pods of one request shape would compute the
same score for every node that nothing touched since. A `KeptScores` (attached to the
snapshot) keeps, per plugin and request shape, the last score of every node slot with the
version of the slot it was computed at, and recomputes only the slots whose version has moved
on: a cycle then costs a few array lookups plus the work for the nodes that changed, not the
work for every feasible node. The caller passes the versions (GpuTopology: the allocator's
`summary_version`). NodeResourcesFit's and BalancedAllocation's scores are per node too, but
keeping them did not pay (docs/performance.md): a CPU pod's sampled nodes nearly always include
some changed since its shape last looked, and rescoring a few nodes takes the same few dozen
array operations as scoring hundreds. At most `LIMIT` shapes are kept, the least recently used
dropped first.
"""

from __future__ import annotations

from collections import OrderedDict
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
