"""The live rebalance controller: the offline planner (`scheduler/rebalance.py`) on the cluster.

Every ``interval`` the leader lists Nodes, Pods, Namespaces, PriorityClasses and
PodDisruptionBudgets and looks for pods that *wait*: pending, for this scheduler, asking for at
least ``min_gpus`` GPUs, ``PodScheduled=False/Unschedulable`` for longer than ``wait`` (since
the condition's lastTransitionTime), and with no move under way for them: not nominated to a
node where a pod is terminating (a preemption's or a move's victims), and not moved for by this
controller within ``node_cooldown``. A pod that a reservation nominated (gputopo-scheduler
holds a node for a large pod until its pods finish, `scheduler/reservation.py`) does wait: a
move may free a node for it sooner. For those it plans with
:class:`~gputopo.scheduler.rebalance.Rebalancer` on the cluster as listed, so every rule of the
planner holds here too: only pods of lower priority, in allowed namespaces and classes, not opted
out, controller-owned, never a gang member, no PodDisruptionBudget exceeded, and no move unless
the simulator proves the waiting pod then fits and every evicted pod fits elsewhere.

* Dry run (the default): an Event ``RebalancePlanned`` on the waiting pod naming the node and
  the evictions, once per distinct plan, and the ``moves`` metric; nothing is evicted.
* Acting: the waiting pod is first nominated to the node to free (``status.nominatedNodeName``:
  gputopo-scheduler counts a nominated pod on its node for every pod of lower or equal
  priority, so the room stays its own; kube-scheduler's preemption nominates before its victims
  go too), then each pod is evicted through the Eviction API (policy/v1, UID-guarded), which
  enforces PodDisruptionBudgets itself: a 429 stops the move (``RebalanceRefused``) and clears
  the nomination, whatever the planner believed. Events go on the evicted pods
  (``RebalanceEvicted``) and the waiting pod (``RebalanceMoved``).
* Rate limits, acting only: a token bucket of evictions per minute, a cool-down per freed node
  and a global cool-down after each move. A move they hold back is planned again next round;
  the waiting pod gets one ``RebalanceDeferred`` Event per reason.

Pods already terminating (an eviction or a deletion under way) hold their place in the plan but
are never picked again. Other pending pods nominated to a node are counted on it, as the
scheduler counts them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Protocol

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gputopo.core.kube import KubeApiError, KubeConnectionError
from gputopo.core.kube.listing import RUNNING_PODS, list_items
from gputopo.core.serve import Probes, ProbeServer, check
from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.rebalance import (
    GPU,
    Move,
    RebalancePlan,
    RebalancePolicy,
    Rebalancer,
    budgets_from_objects,
)
from gputopo.scheduler.runtime.events import EventRecorder
from gputopo.scheduler.runtime.kube import JsonDict, KubeApi
from gputopo.scheduler.runtime.leader import LeaderElector, LeaseConfig
from gputopo.scheduler.scheduling_profile import SchedulerProfile, default_profile
from gputopo.scheduler.simulate import build_snapshot, cluster_from_objects

log = logging.getLogger("gputopo.scheduler.rebalance")

CONTROLLER: Final = "gputopo.io/rebalance"
# Set on pods already terminating before they are planned with: they keep their place (they
# still hold their GPUs) but are never picked again.
_KEEP: Final = ("gputopo.io/rebalance", "never")

LISTS: Final = (
    ("/api/v1/nodes", "Node", None),
    ("/api/v1/namespaces", "Namespace", None),
    ("/apis/scheduling.k8s.io/v1/priorityclasses", "PriorityClass", None),
    ("/apis/policy/v1/poddisruptionbudgets", "PodDisruptionBudget", None),
    ("/api/v1/pods", "Pod", {"fieldSelector": RUNNING_PODS}),
)

# Refusal reasons (the `reason` label of gputopo_rebalance_refusals_total).
DISRUPTION_BUDGET: Final = "disruption-budget"
EVICTIONS_PER_MINUTE: Final = "evictions-per-minute"
NODE_COOLDOWN: Final = "node-cooldown"
COOLDOWN: Final = "cooldown"
CONFLICT: Final = "conflict"
API_ERROR: Final = "api-error"
_REFUSALS: Final = {429: DISRUPTION_BUDGET, 409: CONFLICT}
REFUSAL_REASONS: Final = (
    DISRUPTION_BUDGET,
    EVICTIONS_PER_MINUTE,
    NODE_COOLDOWN,
    COOLDOWN,
    CONFLICT,
    API_ERROR,
)


@dataclass(frozen=True)
class RebalanceSettings:
    """The controller's flags (`gputopo-scheduler rebalance` without --cluster)."""

    policy: RebalancePolicy = field(default_factory=RebalancePolicy)
    dry_run: bool = True
    wait_s: float = 300.0
    interval_s: float = 30.0
    evictions_per_minute: float = 4.0
    node_cooldown_s: float = 600.0
    cooldown_s: float = 60.0
    scheduler_name: str = "gputopo-scheduler"


# -- rate limits ------------------------------------------------------------------------------


class TokenBucket:
    """``rate_per_minute`` tokens a minute, at most a minute's worth saved up. A request for
    more than a full bucket is granted when the bucket is full (and leaves it in debt), so a
    move larger than one minute's allowance is slowed, never starved."""

    def __init__(self, rate_per_minute: float, clock: Callable[[], float]) -> None:
        self.rate_per_s = rate_per_minute / 60.0
        self.capacity = max(rate_per_minute, 1.0)
        self.clock = clock
        self.tokens = self.capacity
        self._at = clock()

    def available(self) -> float:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._at) * self.rate_per_s)
        self._at = now
        return self.tokens

    def allows(self, count: int) -> bool:
        return self.available() >= min(float(count), self.capacity)

    def take(self, count: int) -> None:
        self.available()
        self.tokens -= count


class RateLimits:
    """Evictions per minute, a cool-down per freed node, a global cool-down after a move."""

    def __init__(self, settings: RebalanceSettings, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.clock = clock
        self.bucket = TokenBucket(settings.evictions_per_minute, clock)
        self._node_until: dict[str, float] = {}
        self._until = float("-inf")

    def holds_back(self, move: Move) -> str | None:
        """The reason ``move`` must wait, or None when it may go now."""
        now = self.clock()
        if now < self._until:
            return COOLDOWN
        if now < self._node_until.get(move.frees, float("-inf")):
            return NODE_COOLDOWN
        if not self.bucket.allows(len(move.evict)):
            return EVICTIONS_PER_MINUTE
        return None

    def spend(self, move: Move, evicted: int) -> None:
        """Evictions happened (all of a move, or those before a refusal)."""
        now = self.clock()
        self.bucket.take(evicted)
        self._node_until[move.frees] = now + self.settings.node_cooldown_s
        self._until = now + self.settings.cooldown_s
        self._node_until = {n: t for n, t in self._node_until.items() if t > now}


# -- which pods wait ----------------------------------------------------------------------------


def parse_time(text: object) -> float | None:
    """An RFC 3339 timestamp as epoch seconds; None when absent or unreadable."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def unschedulable_since(pod: Mapping[str, Any]) -> float | None:
    """When PodScheduled turned False/Unschedulable (epoch seconds), or None."""
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            return parse_time(condition.get("lastTransitionTime"))
    return None


def requested_gpus(pod: Mapping[str, Any]) -> int:
    """GPUs the pod's containers request (the larger of the sum and any init container)."""
    spec = pod.get("spec") or {}

    def gpus(container: Mapping[str, Any]) -> int:
        resources = container.get("resources") or {}
        value = (resources.get("requests") or {}).get(GPU) or (resources.get("limits") or {}).get(
            GPU
        )
        try:
            return int(str(value)) if value is not None else 0
        except ValueError:
            return 0

    regular = sum(gpus(c) for c in spec.get("containers") or [])
    init = max((gpus(c) for c in spec.get("initContainers") or []), default=0)
    return max(regular, init)


def waiting_pods(
    pods: Iterable[Mapping[str, Any]],
    settings: RebalanceSettings,
    now: float,
    busy_nodes: Collection[str] = (),
    moved: Collection[str] = (),
) -> list[tuple[str, float]]:
    """(ns/name, unschedulable since) of the pods a move may be planned for, longest first.

    ``busy_nodes``: nodes where a pod is terminating (a pod nominated to one is being made room
    for); ``moved``: pods this controller made a move for lately."""
    found: list[tuple[str, float]] = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        status = pod.get("status") or {}
        key = f"{meta.get('namespace') or 'default'}/{meta.get('name')}"
        if spec.get("nodeName") or meta.get("deletionTimestamp") or key in moved:
            continue
        if (spec.get("schedulerName") or "default-scheduler") != settings.scheduler_name:
            continue
        if status.get("nominatedNodeName") in busy_nodes:
            continue  # a preemption or a move is freeing its node
        if requested_gpus(pod) < settings.policy.min_gpus:
            continue
        since = unschedulable_since(pod)
        if since is None or now - since < settings.wait_s:
            continue
        found.append((key, since))
    return sorted(found, key=lambda item: (item[1], item[0]))


def terminating_on(pods: Iterable[Mapping[str, Any]]) -> set[str]:
    """Nodes with a pod being deleted (an eviction, a preemption under way)."""
    return {
        str((pod.get("spec") or {}).get("nodeName"))
        for pod in pods
        if (pod.get("metadata") or {}).get("deletionTimestamp")
        and (pod.get("spec") or {}).get("nodeName")
    }


# -- metrics --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ControllerState:
    leader: bool
    waiting: int


class _StateCollector(Collector):
    def __init__(self, read_state: Callable[[], ControllerState]) -> None:
        self._read_state = read_state

    def collect(self) -> Iterator[Metric]:
        state = self._read_state()
        leader = GaugeMetricFamily(
            "gputopo_rebalance_leader", "1 while this replica holds the rebalance Lease"
        )
        leader.add_metric([], 1.0 if state.leader else 0.0)
        waiting = GaugeMetricFamily(
            "gputopo_rebalance_waiting_pods",
            "Pods that waited longer than --wait, as the last round saw them",
        )
        waiting.add_metric([], float(state.waiting))
        yield leader
        yield waiting


class RebalanceMetrics:
    def __init__(self, read_state: Callable[[], ControllerState] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.rounds = Counter(
            "gputopo_rebalance_rounds",
            "Planning rounds run by the leader",
            registry=self.registry,
        )
        self.moves = Counter(
            "gputopo_rebalance_moves",
            "Moves planned (mode dry-run, each distinct plan once) or carried out (acting)",
            ["mode"],
            registry=self.registry,
        )
        self.evictions = Counter(
            "gputopo_rebalance_evictions",
            "Pods evicted through the Eviction API",
            registry=self.registry,
        )
        self.refusals = Counter(
            "gputopo_rebalance_refusals",
            "Moves not carried out now, by reason (a rate limit defers; the Eviction API's 429 "
            "is disruption-budget)",
            ["reason"],
            registry=self.registry,
        )
        for mode in ("dry-run", "acting"):
            self.moves.labels(mode)
        for reason in REFUSAL_REASONS:
            self.refusals.labels(reason)
        if read_state is not None:
            self.registry.register(_StateCollector(read_state))


# -- the controller -------------------------------------------------------------------------------


class EventSink(Protocol):
    """Records an Event regarding a pod (the runtime's EventRecorder in production)."""

    def record(self, pod: JsonDict, event_type: str, reason: str, action: str, note: str) -> None:
        pass


@dataclass
class RoundReport:
    waiting: list[str] = field(default_factory=list)
    plan: RebalancePlan = field(default_factory=RebalancePlan)
    done: list[Move] = field(default_factory=list)
    deferred: list[tuple[Move, str]] = field(default_factory=list)
    refused: list[tuple[Move, str]] = field(default_factory=list)


class RebalanceController:
    """One round at a time (:meth:`run_once`); :class:`RebalanceRunner` calls it while leading."""

    def __init__(
        self,
        api: KubeApi,
        settings: RebalanceSettings,
        events: EventSink,
        metrics: RebalanceMetrics,
        profile: SchedulerProfile | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        still_leading: Callable[[], bool] = lambda: True,
    ) -> None:
        self.api = api
        self.settings = settings
        self.events = events
        self.metrics = metrics
        self.profile = profile or default_profile()
        self.wall_clock = wall_clock
        self.still_leading = still_leading
        self.limits = RateLimits(settings, clock)
        self.waiting_count = 0
        self._reported: set[tuple[str, ...]] = set()  # dry-run plans and deferrals told once
        self._moved: dict[str, float] = {}  # pod -> when a move was made for it (clock)
        self.clock = clock

    # -- a round --------------------------------------------------------------------------------

    def run_once(self) -> RoundReport:
        """List, plan, and (acting) carry the plan out, within the rate limits."""
        objects = self._list()
        pods = {_key(obj): obj for obj in objects if obj["kind"] == "Pod"}
        now = self.clock()
        self._moved = {
            key: at
            for key, at in self._moved.items()
            if key in pods and now - at < self.settings.node_cooldown_s
        }
        waiting = waiting_pods(
            pods.values(),
            self.settings,
            self.wall_clock(),
            busy_nodes=terminating_on(pods.values()),
            moved=self._moved,
        )
        self.waiting_count = len(waiting)
        self.metrics.rounds.inc()
        report = RoundReport(waiting=[key for key, _ in waiting])
        self._forget_except({key for key, _ in waiting})
        if not waiting:
            return report
        cluster = cluster_from_objects(
            ((f"{obj['kind']} {_key(obj)}", _as_planned(obj)) for obj in objects),
            skip_invalid=True,
        )
        for note in cluster.notes:
            log.info("object left out of the plan", extra={"note": note})
        by_key = {pod.key: pod for pod in cluster.pending_pods}
        # Budgets count the pods that run; nominated pending pods only hold room.
        budgets = budgets_from_objects(cluster.disruption_budgets, cluster.bound_pods)
        bound = list(cluster.bound_pods)
        planned_for = {key for key, _ in waiting}
        for pod in cluster.pending_pods:  # a nominated pod counts on its node, as the scheduler
            if pod.key in planned_for:
                continue  # its own nomination (a reservation) is what a move may improve on
            nominated = str((pods[pod.key].get("status") or {}).get("nominatedNodeName") or "")
            if nominated:
                bound.append(pod.bound_to(nominated))
        cluster.bound_pods = bound
        planner = Rebalancer(build_snapshot(cluster), budgets, self.settings.policy, self.profile)
        candidates = [by_key[key] for key, _ in waiting if key in by_key]
        report.plan = planner.plan(candidates)
        for item in report.plan.unresolved:
            log.info("no move", extra={"pod": item.pod, "reason": item.reason})
        for move in report.plan.moves:
            waiting_pod = pods[move.for_pod]
            if self.settings.dry_run:
                self._planned(waiting_pod, move)
                continue
            reason = self.limits.holds_back(move)
            if reason is not None:
                self._deferred(waiting_pod, move, reason)
                report.deferred.append((move, reason))
                break  # later moves were planned on this one's outcome: next round
            refusal = self._carry_out(waiting_pod, move, pods)
            if refusal is not None:
                report.refused.append((move, refusal))
                break
            report.done.append(move)
        return report

    def _list(self) -> list[JsonDict]:
        objects: list[JsonDict] = []
        for path, kind, query in LISTS:
            objects.extend(list_items(self.api, path, kind, query))
        return objects

    def _forget_except(self, waiting: set[str]) -> None:
        self._reported = {entry for entry in self._reported if entry[1] in waiting}

    # -- dry run --------------------------------------------------------------------------------

    def _planned(self, pod: JsonDict, move: Move) -> None:
        entry = ("planned", move.for_pod, move.frees, *move.evict)
        if entry in self._reported:
            return
        self._reported.add(entry)
        self.metrics.moves.labels("dry-run").inc()
        note = f"Dry run: would evict {_evictions(move)} from node {move.frees} to make room"
        log.info("move planned (dry run)", extra={"pod": move.for_pod, "node": move.frees})
        self.events.record(pod, "Normal", "RebalancePlanned", "Rebalancing", note)

    # -- acting ---------------------------------------------------------------------------------

    def _deferred(self, pod: JsonDict, move: Move, reason: str) -> None:
        self.metrics.refusals.labels(reason).inc()
        entry = ("deferred", move.for_pod, reason)
        if entry in self._reported:
            return
        self._reported.add(entry)
        note = (
            f"Move deferred ({reason}): evicting {', '.join(move.evict)} from node "
            f"{move.frees} waits for the rate limits; planned again later"
        )
        log.info("move deferred", extra={"pod": move.for_pod, "reason": reason})
        self.events.record(pod, "Normal", "RebalanceDeferred", "Rebalancing", note)

    def _carry_out(self, pod: JsonDict, move: Move, pods: Mapping[str, JsonDict]) -> str | None:
        """Nominate, then evict; the refusal reason if the move stopped, else None.

        The nomination comes first (as kube-scheduler's preemption nominates before its victims
        are gone): from the moment the room is freed it is the waiting pod's, so a recreated
        victim is not placed back into it. A move that stops clears the nomination again."""
        try:
            self._nominate(pod, move.frees)
        except (KubeApiError, KubeConnectionError, OSError) as err:
            self._refused(pod, move, [], API_ERROR, f"nominating it to {move.frees}: {err}")
            return API_ERROR
        evicted: list[str] = []
        for key in move.evict:
            victim = pods[key]
            refusal: tuple[str, str] | None = None
            if not self.still_leading():
                refusal = (API_ERROR, "this replica stopped leading")
            else:
                try:
                    self._evict(victim)
                except KubeApiError as err:
                    if err.status != 404:  # 404: gone already, its place is free
                        detail = err.message or err.reason or f"HTTP {err.status}"
                        refusal = (
                            _REFUSALS.get(err.status, API_ERROR),
                            f"evicting {key}: {detail}",
                        )
                except (KubeConnectionError, OSError) as err:
                    refusal = (API_ERROR, f"evicting {key}: {err}")
            if refusal is not None:
                self._refused(pod, move, evicted, *refusal)
                self._clear_nomination(pod)
                return refusal[0]
            evicted.append(key)
            self.metrics.evictions.inc()
            note = (
                f"Evicted by {CONTROLLER} from node {move.frees} to make room for "
                f"{move.for_pod}; expected to fit on node {move.then[key]}"
            )
            self.events.record(victim, "Normal", "RebalanceEvicted", "Evicting", note)
        self.limits.spend(move, len(evicted))
        self._moved[move.for_pod] = self.clock()
        self.metrics.moves.labels("acting").inc()
        log.info("move done", extra={"pod": move.for_pod, "node": move.frees, "evicted": evicted})
        note = f"Evicted {_evictions(move)} from node {move.frees}; node {move.frees} held for it"
        self.events.record(pod, "Normal", "RebalanceMoved", "Rebalancing", note)
        return None

    def _refused(
        self, pod: JsonDict, move: Move, evicted: Sequence[str], reason: str, detail: str
    ) -> None:
        self.metrics.refusals.labels(reason).inc()
        if evicted:
            self.limits.spend(move, len(evicted))
        done = f" ({len(evicted)} of {len(move.evict)} already evicted)" if evicted else ""
        note = f"Move to node {move.frees} stopped ({reason}): {detail}{done}"
        log.warning("move refused", extra={"pod": move.for_pod, "reason": reason})
        self.events.record(pod, "Warning", "RebalanceRefused", "Rebalancing", note)

    def _evict(self, victim: JsonDict) -> None:
        meta = victim["metadata"]
        namespace, name = meta.get("namespace") or "default", meta["name"]
        body: JsonDict = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
        }
        if meta.get("uid"):  # never a recreated pod of the same name
            body["deleteOptions"] = {"preconditions": {"uid": meta["uid"]}}
        self.api.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/pods/{name}/eviction",
            body=body,
            decode=False,
        )

    def _nominate(self, pod: JsonDict, node: str | None) -> None:
        meta = pod["metadata"]
        path = f"/api/v1/namespaces/{meta.get('namespace') or 'default'}/pods/{meta['name']}/status"
        self.api.request(
            "PATCH",
            path,
            body={"status": {"nominatedNodeName": node}},
            content_type="application/merge-patch+json",
            decode=False,
        )

    def _clear_nomination(self, pod: JsonDict) -> None:
        try:
            self._nominate(pod, None)
        except (KubeApiError, KubeConnectionError, OSError) as err:
            # The scheduler clears a stale nomination itself when nothing can be preempted.
            log.warning("cannot clear nominatedNodeName", extra={"error": str(err)})


def _key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    if obj.get("kind") in ("Node", "Namespace", "PriorityClass"):
        return str(meta.get("name"))
    return f"{meta.get('namespace') or 'default'}/{meta.get('name')}"


def _as_planned(obj: JsonDict) -> JsonDict:
    """A terminating pod keeps its place but is never picked: opted out for the planner."""
    meta = obj.get("metadata") or {}
    if obj.get("kind") != "Pod" or not meta.get("deletionTimestamp"):
        return obj
    annotations = {**(meta.get("annotations") or {}), _KEEP[0]: _KEEP[1]}
    return {**obj, "metadata": {**meta, "annotations": annotations}}


def _evictions(move: Move) -> str:
    return ", ".join(f"{key} (then on {move.then[key]})" for key in move.evict)


# -- the loop -------------------------------------------------------------------------------------


class RebalanceRunner:
    """Runs :meth:`RebalanceController.run_once` every interval while this replica leads."""

    def __init__(
        self,
        controller: RebalanceController,
        is_leader: Callable[[], bool],
    ) -> None:
        self.controller = controller
        self.is_leader = is_leader
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds_failed = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rebalance", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        interval = self.controller.settings.interval_s
        while not self._stop.is_set():
            if self.is_leader():
                try:
                    self.controller.run_once()
                except (KubeApiError, KubeConnectionError, OSError, SchedulerInputError) as err:
                    self.rounds_failed += 1
                    log.warning("rebalance round failed", extra={"error": str(err)})
            self._stop.wait(interval)


class RebalanceService:
    """The deployable: the controller, its Events, leader election, /metrics and probes."""

    def __init__(
        self,
        api: KubeApi,
        settings: RebalanceSettings,
        profile: SchedulerProfile | None = None,
        *,
        lease: LeaseConfig | None = None,
        metrics_address: str | None = None,
        identity: str = "",
    ) -> None:
        self.api = api
        self.recorder = EventRecorder(
            api, CONTROLLER, identity or (lease.identity if lease else "gputopo-rebalance")
        )
        self.metrics = RebalanceMetrics(self._state)
        self.elector: LeaderElector | None = None
        if lease is not None:
            self.elector = LeaderElector(api, lease, lambda: None, lambda: None)
        self.controller = RebalanceController(
            api,
            settings,
            self.recorder,
            self.metrics,
            profile,
            still_leading=self.is_leader,
        )
        self.runner = RebalanceRunner(self.controller, self.is_leader)
        self.server: ProbeServer | None = None
        if metrics_address:
            self.server = ProbeServer.at(
                metrics_address,
                registry=self.metrics.registry,
                probes=Probes(liveness=check(self.runner.alive, "the rebalance loop stopped")),
                thread_name="rebalance-http",
            )

    def is_leader(self) -> bool:
        return self.elector is None or self.elector.is_leader()

    def _state(self) -> ControllerState:
        return ControllerState(self.is_leader(), self.controller.waiting_count)

    def start(self) -> None:
        if self.server is not None:
            self.server.start()
        if self.elector is not None:
            self.elector.start()
        self.runner.start()

    def stop(self) -> None:
        self.runner.stop()
        if self.elector is not None:
            self.elector.stop(release=True)
        self.recorder.close()
        if self.server is not None:
            self.server.stop()
