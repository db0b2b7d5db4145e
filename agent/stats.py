"""What the run loop records for ``/metrics``: the latest snapshot and the agent's work counters.

The loop writes here (a new :class:`MetricsSnapshot` in the :class:`SnapshotHolder` after each
discovery, health tick and pod-resources poll; its work in :class:`AgentStats`); the collector in
:mod:`agent.metrics` reads it when Prometheus scrapes. Nothing here knows Prometheus.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from gputopo.agent.podresources import PodResourcesSnapshot
from gputopo.agent.topology import NodeTopology
from gputopo.agent.usage import LoadSample

# Seconds: discovery takes ~0.1 s on a mocked DGX and seconds on a real 8-GPU node (P2P queries).
DISCOVERY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True)
class MetricsSnapshot:
    """What the node looks like now; any part may still be missing (``None``: not yet known)."""

    topology: NodeTopology | None = None
    load: LoadSample | None = None
    pod_resources: PodResourcesSnapshot | None = None


class SnapshotHolder:
    """The latest :class:`MetricsSnapshot`; loops replace parts, scrapes read the whole."""

    def __init__(self, snapshot: MetricsSnapshot | None = None) -> None:
        self._lock = threading.Lock()
        self._snapshot = snapshot or MetricsSnapshot()

    def get(self) -> MetricsSnapshot:
        with self._lock:
            return self._snapshot

    def set(self, snapshot: MetricsSnapshot) -> None:
        with self._lock:
            self._snapshot = snapshot

    def update(
        self,
        *,
        topology: NodeTopology | None = None,
        load: LoadSample | None = None,
        pod_resources: PodResourcesSnapshot | None = None,
    ) -> MetricsSnapshot:
        """Replace the parts given (``None`` keeps a part as it is)."""
        changes: dict[str, Any] = {}
        if topology is not None:
            changes["topology"] = topology
        if load is not None:
            changes["load"] = load
        if pod_resources is not None:
            changes["pod_resources"] = pod_resources
        with self._lock:
            self._snapshot = replace(self._snapshot, **changes)
            return self._snapshot


@dataclass(frozen=True)
class AgentStatsSnapshot:
    discovery_bucket_counts: tuple[int, ...]  # per DISCOVERY_BUCKETS bound, not cumulative
    discovery_count: int
    discovery_sum_seconds: float
    discoveries: Mapping[str, int]  # outcome -> count
    api_writes: Mapping[str, int]  # outcome -> count
    last_successful_publish: float | None
    last_discovery: float | None
    partial_discoveries: int = 0
    foreign_owned_keys: int = 0
    foreign_nrt: int = 0
    # nvidia.com/* key -> the other writers holding it with a value other than gputopo's
    label_conflicts: Mapping[str, str] = field(default_factory=dict)
    # the GPU Operator's upgrade state while the agent has NVML released for it, else None
    driver_upgrade: str | None = None


class AgentStats:
    """The agent's own work counters. Loops record; the collector reads at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets = [0] * (len(DISCOVERY_BUCKETS) + 1)  # the last one is +Inf
        self._count = 0
        self._sum = 0.0
        self._discoveries: dict[str, int] = {"success": 0, "error": 0}
        self._api_writes: dict[str, int] = {}
        self._last_publish: float | None = None
        self._last_discovery: float | None = None
        self._partial_discoveries = 0
        self._foreign_owned_keys = 0
        self._foreign_nrt = 0
        self._label_conflicts: dict[str, str] = {}
        self._driver_upgrade: str | None = None

    def record_label_conflicts(self, conflicts: Mapping[str, str]) -> None:
        """The publisher's current label conflicts (key -> other writers), replacing the last."""
        with self._lock:
            self._label_conflicts = dict(conflicts)

    def record_driver_upgrade(self, state: str | None) -> None:
        """The upgrade state NVML is released for, or None once it is open again."""
        with self._lock:
            self._driver_upgrade = state

    def observe_discovery(
        self, seconds: float, *, success: bool = True, at: float | None = None
    ) -> None:
        with self._lock:
            position = next(
                (i for i, bound in enumerate(DISCOVERY_BUCKETS) if seconds <= bound),
                len(DISCOVERY_BUCKETS),
            )
            self._buckets[position] += 1
            self._count += 1
            self._sum += seconds
            outcome = "success" if success else "error"
            self._discoveries[outcome] += 1
            if success:
                self._last_discovery = time.time() if at is None else at

    def record_api_write(self, outcome: str, count: int = 1) -> None:
        """An API write attempted by the publisher: ``outcome`` e.g. success, conflict, error."""
        with self._lock:
            self._api_writes[outcome] = self._api_writes.get(outcome, 0) + count

    def record_publish_checks(
        self, *, partial_discoveries: int, foreign_owned_keys: int, foreign_nrt: int = 0
    ) -> None:
        """The publisher's safety counters as it last reported them (totals, not deltas)."""
        with self._lock:
            self._partial_discoveries = partial_discoveries
            self._foreign_owned_keys = foreign_owned_keys
            self._foreign_nrt = foreign_nrt

    def record_publish_success(self, at: float | None = None) -> None:
        with self._lock:
            self._last_publish = time.time() if at is None else at

    def snapshot(self) -> AgentStatsSnapshot:
        with self._lock:
            return AgentStatsSnapshot(
                discovery_bucket_counts=tuple(self._buckets),
                discovery_count=self._count,
                discovery_sum_seconds=self._sum,
                discoveries=dict(self._discoveries),
                api_writes=dict(self._api_writes),
                last_successful_publish=self._last_publish,
                last_discovery=self._last_discovery,
                partial_discoveries=self._partial_discoveries,
                foreign_owned_keys=self._foreign_owned_keys,
                foreign_nrt=self._foreign_nrt,
                label_conflicts=dict(self._label_conflicts),
                driver_upgrade=self._driver_upgrade,
            )
