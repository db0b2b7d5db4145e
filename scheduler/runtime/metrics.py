"""The runtime's own metrics and its /metrics, /healthz, /readyz endpoint (the shared server).

Work counters (attempts, bind errors) and the scheduling-latency histogram are owned by the
runtime and incremented where the work happens. State that already lives elsewhere — queue
depth, leadership, assumed pods — is read at scrape time by a custom collector, never copied
into gauges by a loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gputopo.core.address import parse_address
from gputopo.core.serve import Probes, ProbeServer, check
from gputopo.scheduler.runtime.queue import QueueDepth


@dataclass(frozen=True)
class RuntimeState:
    """What the collector reads at scrape time."""

    queue_depth: QueueDepth
    leader: bool
    assumed_pods: int
    nodes: int
    reserved_nodes: int = 0


class RuntimeCollector(Collector):
    def __init__(self, read_state: Callable[[], RuntimeState]) -> None:
        self._read_state = read_state

    def collect(self) -> Iterator[Metric]:
        state = self._read_state()
        depth = GaugeMetricFamily(
            "gputopo_scheduler_queue_depth",
            "Pending pods in the scheduling queue, by sub-queue.",
            labels=["queue"],
        )
        depth.add_metric(["active"], state.queue_depth.active)
        depth.add_metric(["backoff"], state.queue_depth.backoff)
        depth.add_metric(["unschedulable"], state.queue_depth.unschedulable)
        depth.add_metric(["in_flight"], state.queue_depth.in_flight)
        yield depth
        yield GaugeMetricFamily(
            "gputopo_scheduler_leader",
            "1 while this replica holds the leader Lease and schedules, else 0.",
            value=1 if state.leader else 0,
        )
        yield GaugeMetricFamily(
            "gputopo_scheduler_assumed_pods",
            "Pods this replica bound whose binding the watch has not confirmed yet.",
            value=state.assumed_pods,
        )
        yield GaugeMetricFamily(
            "gputopo_scheduler_cache_nodes",
            "Nodes in the scheduler's cluster cache.",
            value=state.nodes,
        )
        yield GaugeMetricFamily(
            "gputopo_scheduler_reserved_nodes",
            "Nodes held now for a waiting large GPU pod (GPU reservations).",
            value=state.reserved_nodes,
        )


class SchedulerMetrics:
    """One registry per runtime, so two runtimes in one process (tests) do not collide."""

    def __init__(self, read_state: Callable[[], RuntimeState]) -> None:
        self.registry = CollectorRegistry()
        self.attempts = Counter(
            "gputopo_scheduler_attempts",
            "Scheduling attempts by result.",
            ["result"],
            registry=self.registry,
        )
        for result in ("scheduled", "unschedulable", "error"):
            self.attempts.labels(result)
        self.scheduling_duration = Histogram(
            "gputopo_scheduler_scheduling_duration_seconds",
            "Time from popping a pod off the queue to a placement decision (filters + scores).",
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.bind_duration = Histogram(
            "gputopo_scheduler_bind_duration_seconds",
            "Time of the pods/binding request.",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.bind_errors = Counter(
            "gputopo_scheduler_bind_errors",
            "Failed pods/binding requests by reason (conflict, not_found, node_gone, error).",
            ["reason"],
            registry=self.registry,
        )
        self.assumptions_expired = Counter(
            "gputopo_scheduler_assumptions_expired",
            "Assumed pods dropped because the watch never confirmed their binding in time.",
            registry=self.registry,
        )
        self.watch_errors = Counter(
            "gputopo_scheduler_watch_errors",
            "List/watch failures by resource (each is followed by a backed-off reconnect).",
            ["resource"],
            registry=self.registry,
        )
        self.gang_cycles = Counter(
            "gputopo_scheduler_gang_cycles",
            "Gang members' scheduling cycles by outcome: held (found a node and holds it), "
            "unschedulable (found none: the group lets go), refused (turned away before the "
            "filters: too few pods, minResources not free, no topology domain, invalid "
            "PodGroup), backing_off (turned away while the group backs off).",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ("held", "unschedulable", "refused", "backing_off"):
            self.gang_cycles.labels(outcome)
        self.reservations = Counter(
            "gputopo_scheduler_reservations",
            "GPU reservations by event: made (a node newly held for a waiting large GPU pod), "
            "expired (its time ran out before the pod fit; the nomination is cleared).",
            ["event"],
            registry=self.registry,
        )
        for event in ("made", "expired"):
            self.reservations.labels(event)
        self.registry.register(RuntimeCollector(read_state))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HealthServer(ProbeServer):
    """The runtime's /metrics, /healthz (threads alive) and /readyz (caches synced): the one
    probe server both deployables run (:mod:`gputopo.core.serve`)."""

    def __init__(
        self,
        address: str,
        metrics: SchedulerMetrics,
        healthy: Callable[[], bool],
        ready: Callable[[], bool],
    ) -> None:
        host, port = parse_address(address, example=":10259")
        probes = Probes(
            liveness=check(healthy, "unhealthy: a runtime thread stopped"),
            readiness=check(ready, "not ready: the caches have not listed everything yet"),
        )
        super().__init__(
            host, port, registry=metrics.registry, probes=probes, thread_name="metrics-http"
        )
