"""NodeResourceTopology (``topology.node.k8s.io/v1alpha2``), server-side applied per node.

One zone per NUMA node (type ``Node``, named ``node-<id>`` as the kubelet and NFD's
topology-updater name them), costs = the NUMA distance row, and per zone the resources
``cpu``, ``memory`` and ``nvidia.com/gpu`` with capacity, allocatable and available.

``available`` is an input: the caller passes what the kubelet's pod-resources API says is free
per NUMA node; without it, ``available`` equals ``allocatable`` (nothing known to be in use).
Capacity and allocatable are the hardware the agent sees: CPUs and memory of the NUMA node and
its GPUs; the kubelet's reservations are not subtracted here.

The object is written with server-side apply (field manager ``gputopo-agent``) and only when
its content differs from what is stored, so an unchanged node makes no write.

NFD's topology-updater writes an NRT of the same name (the node's). Two writers would overwrite
each other's zones every cycle, so the agent steps back from an NRT it does not manage — one
without its ``app.kubernetes.io/managed-by`` label, or whose zones another field manager has
written — and writes nothing to it until it is gone (docs/coexistence.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from gputopo.agent.publish.calls import (
    FIELD_MANAGER,
    ApiCallFailed,
    PublishCounters,
    PublishResult,
    describe_api_error,
)
from gputopo.agent.topology import NodeTopology
from gputopo.core.retry import Backoff, is_retryable, status_of

log = logging.getLogger(__name__)

GROUP: Final = "topology.node.k8s.io"
VERSION: Final = "v1alpha2"
PLURAL: Final = "noderesourcetopologies"
KIND: Final = "NodeResourceTopology"
APPLY_PATCH: Final = "application/apply-patch+yaml"
GPU_RESOURCE: Final = "nvidia.com/gpu"
MANAGED_BY: Final = "app.kubernetes.io/managed-by"


def zone_name(numa_id: int) -> str:
    return f"node-{numa_id}"


def build_nrt(
    node_name: str,
    topology: NodeTopology,
    available: Mapping[int, Mapping[str, int]] | None = None,
) -> dict[str, Any]:
    """The NodeResourceTopology object for ``topology`` (pure)."""
    numa_nodes = sorted(topology.numa_nodes, key=lambda n: n.id)
    gpus_on: dict[int, int] = {}
    for gpu in topology.gpus:
        if gpu.numa_node is not None:
            gpus_on[gpu.numa_node] = gpus_on.get(gpu.numa_node, 0) + 1
    zones: list[dict[str, Any]] = []
    for numa in numa_nodes:
        capacity: dict[str, int] = {"cpu": len(numa.cpus)}
        if numa.memory_total_bytes is not None:
            capacity["memory"] = numa.memory_total_bytes
        capacity[GPU_RESOURCE] = gpus_on.get(numa.id, 0)
        free = (available or {}).get(numa.id, {})
        resources = [
            {
                "name": name,
                "capacity": quantity,
                "allocatable": quantity,
                "available": max(0, min(quantity, free.get(name, quantity))),
            }
            for name, quantity in sorted(capacity.items())
        ]
        zone: dict[str, Any] = {"name": zone_name(numa.id), "type": "Node", "resources": resources}
        if len(numa.distances) == len(numa_nodes):
            zone["costs"] = [
                {"name": zone_name(other.id), "value": numa.distances[j]}
                for j, other in enumerate(numa_nodes)
            ]
        elif numa.distances:
            log.warning(
                "NUMA node %d has %d distances for %d nodes; leaving its costs out",
                numa.id,
                len(numa.distances),
                len(numa_nodes),
            )
        zones.append(zone)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {
            "name": node_name,
            "labels": {MANAGED_BY: FIELD_MANAGER},
        },
        "zones": zones,
    }


def foreign_writer(current: Mapping[str, Any] | None) -> str | None:
    """Who else writes this NRT, or None when there is none or it is this agent's (pure).

    Not this agent's: an NRT without ``managed-by: gputopo-agent`` (NFD's topology-updater
    creates its own, of the same name), or one whose zones a field manager other than the agent
    wrote (NFD updating the agent's object in place: its label stays, its zones are NFD's). The
    answer names the other writer from the label or ``managedFields`` for the log line."""
    if current is None:
        return None
    metadata = current.get("metadata") or {}
    labels = metadata.get("labels") or {}
    managers = metadata.get("managedFields") or []
    others = [
        str(entry.get("manager") or "an unnamed field manager")
        for entry in managers
        if isinstance(entry, Mapping)
        and entry.get("manager") != FIELD_MANAGER
        and "f:zones" in (entry.get("fieldsV1") or {})
    ]
    if labels.get(MANAGED_BY) != FIELD_MANAGER:
        owner = labels.get(MANAGED_BY)
        return str(owner) if owner else (others[0] if others else "another writer")
    return others[0] if others else None


class CustomObjectsApi(Protocol):
    """The calls of :class:`gputopo.core.kube.KubeClient` the NodeResourceTopology writer uses."""

    def get_cluster_custom_object(
        self, group: str, version: str, plural: str, name: str
    ) -> Any: ...

    def patch_cluster_custom_object(
        self,
        group: str,
        version: str,
        plural: str,
        name: str,
        body: Any,
        *,
        field_manager: str | None = ...,
        force: bool | None = ...,
        _content_type: str = ...,
    ) -> Any: ...

    def delete_cluster_custom_object(
        self, group: str, version: str, plural: str, name: str
    ) -> Any: ...


def _canonical_quantity(value: Any) -> Any:
    return int(value) if isinstance(value, str) and value.isdigit() else value


def _content(obj: Mapping[str, Any]) -> Any:
    """The parts of an NRT this agent owns, normalised for comparison."""
    zones = []
    for zone in obj.get("zones") or []:
        zones.append(
            {
                "name": zone.get("name"),
                "type": zone.get("type"),
                "costs": zone.get("costs") or [],
                "resources": [
                    {k: _canonical_quantity(v) for k, v in resource.items()}
                    for resource in zone.get("resources") or []
                ],
            }
        )
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return {"zones": zones, "managed-by": labels.get("app.kubernetes.io/managed-by")}


class NrtPublisher:
    """Server-side applies one node's NodeResourceTopology when its content changed."""

    def __init__(
        self,
        api: CustomObjectsApi,
        node_name: str,
        *,
        backoff: Backoff | None = None,
        counters: PublishCounters | None = None,
    ) -> None:
        self.api = api
        self.node_name = node_name
        self.backoff = backoff or Backoff()
        self.counters = counters or PublishCounters()
        # The other writer of this node's NRT while the agent steps back from it (logged once).
        self.stepped_back_for: str | None = None

    def _step_back(self, current: Mapping[str, Any] | None) -> str | None:
        """Whether another writer owns the stored NRT; logs when that starts and ends."""
        other = foreign_writer(current)
        if other is not None and other != self.stepped_back_for:
            log.warning(
                "NodeResourceTopology %s is written by %s, not gputopo-agent: not writing it "
                "while it is there (docs/coexistence.md)",
                self.node_name,
                other,
            )
        elif other is None and self.stepped_back_for is not None:
            log.info(
                "NodeResourceTopology %s is no longer written by %s: gputopo-agent writes it",
                self.node_name,
                self.stepped_back_for,
            )
        self.stepped_back_for = other
        self.counters.foreign_nrt = 0 if other is None else 1
        return other

    def _call(self, what: str, fn: Callable[[], Any], *, allow_404: bool = False) -> Any:
        for attempt in range(self.backoff.max_attempts):
            try:
                return fn()
            except Exception as error:
                status = status_of(error)
                if allow_404 and status == 404:
                    return None
                self.counters.api_errors += 1
                if not is_retryable(error) or attempt + 1 >= self.backoff.max_attempts:
                    raise ApiCallFailed(f"{what}: {describe_api_error(error)}", status) from None
                self.counters.retries += 1
                delay = self.backoff.delay(attempt)
                reason = describe_api_error(error)
                log.warning("%s failed (%s); retrying in %.1fs", what, reason, delay)
                self.backoff.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _get(self) -> dict[str, Any] | None:
        current = self._call(
            f"reading NodeResourceTopology {self.node_name}",
            lambda: self.api.get_cluster_custom_object(GROUP, VERSION, PLURAL, self.node_name),
            allow_404=True,
        )
        return current if isinstance(current, dict) else None

    def publish(
        self,
        topology: NodeTopology,
        available: Mapping[int, Mapping[str, int]] | None = None,
        *,
        dry_run: bool = False,
    ) -> PublishResult:
        desired = build_nrt(self.node_name, topology, available)
        try:
            current = self._get()
            other = self._step_back(current)
            if other is not None:
                return PublishResult(
                    "unchanged", message=f"{KIND} {self.node_name} is {other}'s: not written"
                )
            if current is not None and _content(current) == _content(desired):
                self.counters.unchanged += 1
                return PublishResult("unchanged")
            if dry_run:
                return PublishResult("dry-run", message=f"would apply {KIND} {self.node_name}")
            self._call(
                f"applying NodeResourceTopology {self.node_name}",
                lambda: self.api.patch_cluster_custom_object(
                    GROUP,
                    VERSION,
                    PLURAL,
                    self.node_name,
                    desired,
                    field_manager=FIELD_MANAGER,
                    force=True,
                    _content_type=APPLY_PATCH,
                ),
            )
        except ApiCallFailed as error:
            log.error("NodeResourceTopology for %s not published: %s", self.node_name, error)
            return PublishResult("error", message=str(error))
        self.counters.writes += 1
        return PublishResult("written", message=f"applied {KIND} {self.node_name}")

    def prune(self, *, dry_run: bool = False) -> PublishResult:
        try:
            current = self._get()
            if current is None:
                return PublishResult("unchanged")
            if foreign_writer(current) is not None:
                return PublishResult("unchanged", message="NodeResourceTopology is not ours")
            if dry_run:
                return PublishResult("dry-run", message=f"would delete {KIND} {self.node_name}")
            self._call(
                f"deleting NodeResourceTopology {self.node_name}",
                lambda: self.api.delete_cluster_custom_object(
                    GROUP, VERSION, PLURAL, self.node_name
                ),
                allow_404=True,
            )
        except ApiCallFailed as error:
            return PublishResult("error", message=str(error))
        self.counters.writes += 1
        return PublishResult("written", message=f"deleted {KIND} {self.node_name}")
