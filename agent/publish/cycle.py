"""One discovery + publish cycle: what ``run --once`` does and what the run loop repeats."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from gputopo.agent.publish.calls import PublishResult
from gputopo.agent.publish.desired import is_successful_discovery
from gputopo.agent.publish.writer import Publisher
from gputopo.agent.topology import NodeTopology

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CycleResult:
    node: PublishResult
    nrt: PublishResult | None = None
    device_taints: PublishResult | None = None

    @property
    def ok(self) -> bool:
        return (
            self.node.ok
            and (self.nrt is None or self.nrt.ok)
            and (self.device_taints is None or self.device_taints.ok)
        )


class NrtWriter(Protocol):
    def publish(
        self,
        topology: NodeTopology,
        available: Mapping[int, Mapping[str, int]] | None = None,
        *,
        dry_run: bool = False,
    ) -> PublishResult: ...


class DeviceTaintWriter(Protocol):
    """agent.device_taints.DeviceTaintPublisher: per-GPU health as DeviceTaintRules."""

    def publish(self, topology: NodeTopology, *, dry_run: bool = False) -> PublishResult: ...

    def covers_node_health(self, topology: NodeTopology) -> bool:
        """Whether every GPU the node health taint stands for has its device taint."""
        ...


def run_cycle(
    discover: Callable[[], NodeTopology],
    publisher: Publisher,
    *,
    nrt: NrtWriter | None = None,
    available: Callable[[], Mapping[int, Mapping[str, int]]] | None = None,
    device_taints: DeviceTaintWriter | None = None,
    dry_run: bool = False,
) -> CycleResult:
    """One discovery + publish; what ``run --once`` does and what the run loop will repeat."""
    try:
        topology = discover()
    except Exception as error:  # discovery promises not to raise; a bug must not strip the node
        publisher.counters.cycles += 1
        publisher.counters.discovery_failures += 1
        message = f"discovery raised {type(error).__name__}: {error}; keeping the Node as it is"
        log.error("%s", message)
        return CycleResult(PublishResult("skipped", message=message))
    # Device taints first: where every failed GPU has its own, the node health taint (which would
    # keep pods off the healthy GPUs too) is not published; it stays for nodes without DRA.
    taints_result = None
    health_taint = True
    if device_taints is not None:
        taints_result = device_taints.publish(topology, dry_run=dry_run)
        health_taint = not (taints_result.ok and device_taints.covers_node_health(topology))
    node_result = publisher.publish(topology, dry_run=dry_run, health_taint=health_taint)
    nrt_result = None
    # A partial discovery's zones may be missing NUMA nodes or GPUs: the last NRT stands.
    if nrt is not None and is_successful_discovery(topology) and not topology.incomplete:
        nrt_result = nrt.publish(topology, available() if available else None, dry_run=dry_run)
    return CycleResult(node_result, nrt_result, taints_result)
