"""Gang scheduling: Kubernetes' own PodGroup, and scheduler-plugins' Coscheduling.

A pod joins a gang in one of two ways, both in the pod's namespace:

- Kubernetes' workload API (`scheduling.k8s.io/v1beta1`, gate `GenericWorkload`):
  `spec.schedulingGroup.podGroupName` names a PodGroup whose `spec.schedulingPolicy.gang.minCount`
  is the gang's size (`basic` is a group of one) and whose
  `spec.schedulingConstraints.topology[0].key` keeps every member in one domain of that node
  label (required). Its status carries kube-scheduler's `PodGroupInitiallyScheduled` condition.
- Coscheduling: the label `scheduling.x-k8s.io/pod-group: <PodGroup name>` names a
  `scheduling.x-k8s.io/v1alpha1` PodGroup (`minMember`, `scheduleTimeoutSeconds`,
  `minResources`). A pod that sets both is a member of the native group only.

The two kinds have separate keys (`namespace/name` for Coscheduling,
`scheduling.k8s.io/namespace/name` for the native kind), so groups of one name never mix. The
native API has no timeout field: its gangs wait `DEFAULT_TIMEOUT_S`. No member is bound until the
minimum count has a place:

- PreFilter: a member whose group is unknown, or whose group has fewer than `minMember` pods in
  all (pending + bound), is unschedulable at once, with Coscheduling's message.
- Permit: a member that found a node *holds* it (the runtime assumes it there, so no one else
  takes the room) and waits. When held + already bound members reach `minMember`, every held
  member is released to binding together.
- Reject: when a member finds no node while siblings hold places, the whole group lets go of
  its places at once — a half-placed gang never sits on room another gang could complete in
  (that is what keeps two competing gangs from deadlocking).
- Timeout: places held longer than `scheduleTimeoutSeconds` (default 60 s) are let go, the
  members back off and are retried.
- Group back-off: after a reject, a timeout, or a group turned away for good reason (its
  `minResources` are not free, no topology domain holds it), the whole group backs off:
  members popped meanwhile are turned away without running a filter (Coscheduling's
  podGroupBackoff).
- minResources: a group is not attempted while the cluster's free capacity is below its
  `spec.minResources` (plus `pods: minMember`), as Coscheduling's PreFilter checks.
- Topology: the PodGroup annotation `gputopo.io/gang-topology: <node label key>` keeps the
  members on nodes sharing one value of that label (`gputopo.io/gang-topology-policy:
  required` or `preferred`, the default).
- Status: `group_status` computes the PodGroup's status (Coscheduling's v1alpha1 phases).

This module keeps the state and the pure logic; `scheduler/runtime/gang_hooks.py` makes the calls.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from gputopo.core.validate import is_qualified_name
from gputopo.scheduler.model import Pod
from gputopo.scheduler.quantity import CPU, PODS, resource_amount
from gputopo.scheduler.snapshot import ClusterSnapshot

POD_GROUP_LABEL: Final = "scheduling.x-k8s.io/pod-group"
PODGROUP_GROUP: Final = "scheduling.x-k8s.io"
PODGROUP_VERSION: Final = "v1alpha1"
PODGROUP_API: Final = f"/apis/{PODGROUP_GROUP}/{PODGROUP_VERSION}"
PODGROUPS_PATH: Final = f"{PODGROUP_API}/podgroups"
# Kubernetes' own gang API (KEP-4671 workload-aware scheduling), beta in v1.37.
NATIVE_PODGROUP_GROUP: Final = "scheduling.k8s.io"
NATIVE_PODGROUP_VERSION: Final = "v1beta1"
NATIVE_PODGROUP_API: Final = f"/apis/{NATIVE_PODGROUP_GROUP}/{NATIVE_PODGROUP_VERSION}"
NATIVE_PODGROUPS_PATH: Final = f"{NATIVE_PODGROUP_API}/podgroups"
NATIVE_KEY_PREFIX: Final = f"{NATIVE_PODGROUP_GROUP}/"
NATIVE_PODGROUP_KIND: Final = "PodGroup.scheduling.k8s.io"  # the runtime's watch of that kind
DEFAULT_TIMEOUT_S: Final = 60.0
TOPOLOGY_ANNOTATION: Final = "gputopo.io/gang-topology"
TOPOLOGY_POLICY_ANNOTATION: Final = "gputopo.io/gang-topology-policy"
TOPOLOGY_POLICIES: Final = ("preferred", "required")

# scheduler-plugins' v1alpha1 PodGroupPhase values.
PHASE_PENDING: Final = "Pending"
PHASE_PRE_SCHEDULING: Final = "PreScheduling"
PHASE_SCHEDULING: Final = "Scheduling"
PHASE_SCHEDULED: Final = "Scheduled"
PHASE_RUNNING: Final = "Running"
PHASE_FINISHED: Final = "Finished"
PHASE_FAILED: Final = "Failed"

JsonDict = dict[str, Any]


def group_key_of(pod: JsonDict) -> str | None:
    """The gang key of a member (see the module docstring), None for any other pod."""
    meta = pod.get("metadata") or {}
    group = (pod.get("spec") or {}).get("schedulingGroup")
    native = group.get("podGroupName") if isinstance(group, Mapping) else None
    return _group_key(str(meta.get("namespace") or ""), native, (meta.get("labels") or {}))


def group_key_of_podgroup(obj: JsonDict, native: bool | None = None) -> str:
    """The gang key of a PodGroup object of either kind; ``native`` None: by its apiVersion
    (list items carry none: a watch of one kind says which)."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace") or "default"
    if is_native_podgroup(obj) if native is None else native:
        return f"{NATIVE_KEY_PREFIX}{namespace}/{meta.get('name')}"
    return f"{namespace}/{meta.get('name')}"


def is_native_podgroup(obj: JsonDict) -> bool:
    return str(obj.get("apiVersion") or "").startswith(NATIVE_KEY_PREFIX)


def split_group_key(group_key: str) -> tuple[str, str, str]:
    """(API path of its kind, namespace, name) of a gang key."""
    if group_key.startswith(NATIVE_KEY_PREFIX):
        namespace, name = group_key[len(NATIVE_KEY_PREFIX) :].split("/", 1)
        return NATIVE_PODGROUP_API, namespace, name
    namespace, name = group_key.split("/", 1)
    return PODGROUP_API, namespace, name


def _group_key(namespace: str, native: object, labels: Mapping[str, str]) -> str | None:
    namespace = namespace or "default"
    if isinstance(native, str) and native:
        return f"{NATIVE_KEY_PREFIX}{namespace}/{native}"
    name = labels.get(POD_GROUP_LABEL)
    return f"{namespace}/{name}" if name else None


@dataclass(frozen=True)
class GangTopology:
    """Members share one value of ``label_key`` on their nodes: must (required) or should."""

    label_key: str
    required: bool

    @property
    def policy(self) -> str:
        return "required" if self.required else "preferred"


@dataclass(frozen=True)
class PodGroupSpec:
    key: str
    min_member: int
    timeout_s: float
    min_resources: tuple[tuple[str, int], ...] = ()  # (resource, amount in scheduler units)
    topology: GangTopology | None = None
    invalid: str | None = None  # a one-line message naming the bad field; the group waits

    @classmethod
    def from_json(cls, obj: JsonDict, native: bool | None = None) -> PodGroupSpec:
        """Either kind; ``native`` as for `group_key_of_podgroup`."""
        if is_native_podgroup(obj) if native is None else native:
            return cls._from_native(obj)
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        key = group_key_of_podgroup(obj, native=False)
        timeout = spec.get("scheduleTimeoutSeconds")
        problems: list[str] = []
        min_resources: list[tuple[str, int]] = []
        for name, text in sorted((spec.get("minResources") or {}).items()):
            try:
                min_resources.append((str(name), resource_amount(str(name), text)))
            except ValueError:
                problems.append(f"spec.minResources.{name}: expected a quantity, got {text!r}")
        topology, problem = _topology_of(meta.get("annotations") or {})
        if problem is not None:
            problems.append(problem)
        return cls(
            key=key,
            min_member=max(int(spec.get("minMember") or 1), 1),
            timeout_s=float(timeout) if timeout else DEFAULT_TIMEOUT_S,
            min_resources=tuple(min_resources),
            topology=topology,
            invalid=f"PodGroup {key}: {'; '.join(problems)}" if problems else None,
        )

    @classmethod
    def _from_native(cls, obj: JsonDict) -> PodGroupSpec:
        """`scheduling.k8s.io/v1beta1` PodGroup: gang.minCount (basic: one), the topology
        constraint (required), else gputopo's topology annotations."""
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        key = group_key_of_podgroup(obj, native=True)
        problems: list[str] = []
        policy = spec.get("schedulingPolicy") or {}
        gang = policy.get("gang") if isinstance(policy, Mapping) else None
        min_count = 1
        if isinstance(gang, Mapping):
            raw = gang.get("minCount")
            if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 1:
                min_count = raw
            else:
                problems.append(
                    f"spec.schedulingPolicy.gang.minCount: expected a positive integer, got {raw!r}"
                )
        topology, problem = _topology_of(meta.get("annotations") or {})
        if problem is not None:
            problems.append(problem)
        constraints = spec.get("schedulingConstraints") or {}
        terms = constraints.get("topology") if isinstance(constraints, Mapping) else None
        if terms:
            first = terms[0] if isinstance(terms, list) else None
            label_key = first.get("key") if isinstance(first, Mapping) else None
            if isinstance(label_key, str) and is_qualified_name(label_key):
                topology = GangTopology(label_key, required=True)
            else:
                problems.append(
                    "spec.schedulingConstraints.topology[0].key: expected a node label key, "
                    f"got {label_key!r}"
                )
        return cls(
            key=key,
            min_member=min_count,
            timeout_s=DEFAULT_TIMEOUT_S,
            topology=topology,
            invalid=f"PodGroup {key}: {'; '.join(problems)}" if problems else None,
        )


def _topology_of(annotations: Mapping[str, str]) -> tuple[GangTopology | None, str | None]:
    label_key = annotations.get(TOPOLOGY_ANNOTATION)
    policy = annotations.get(TOPOLOGY_POLICY_ANNOTATION, "preferred")
    if policy not in TOPOLOGY_POLICIES:
        return None, (
            f"annotation {TOPOLOGY_POLICY_ANNOTATION}: expected required or preferred, "
            f"got {policy!r}"
        )
    if label_key is None:
        return None, None
    if not is_qualified_name(label_key):
        return None, (
            f"annotation {TOPOLOGY_ANNOTATION}: expected a node label key, got {label_key!r}"
        )
    return GangTopology(label_key, policy == "required"), None


def not_found_message(group_key: str) -> str:
    """Coscheduling's, or for a native group kube-scheduler's GangScheduling message."""
    if group_key.startswith(NATIVE_KEY_PREFIX):
        name = split_group_key(group_key)[2]
        return f'waiting for pods\'s pod group "{name}" to appear in scheduling queue'
    return f"pod group {group_key} not found"


def too_few_message(pod_key: str, count: int, min_member: int, group_key: str = "") -> str:
    """Coscheduling's PreFilter message, or for a native group kube-scheduler's PreEnqueue
    message with the counts added."""
    if group_key.startswith(NATIVE_KEY_PREFIX):
        return (
            "waiting for minCount pods from a gang to appear in scheduling queue "
            f"(pods: {count}, minCount: {min_member})"
        )
    return (
        f"pre-filter pod {pod_key.split('/', 1)[-1]} cannot find enough sibling pods, "
        f"current pods number: {count}, minMember of group: {min_member}"
    )


def timeout_message(group_key: str) -> str:
    return f"pod group {group_key}: members waited past scheduleTimeoutSeconds for a full gang"


def rejected_message(group_key: str, pod_key: str, reason: str) -> str:
    return (
        f"pod group {group_key}: member {pod_key.split('/', 1)[-1]} has no place ({reason}), "
        "so the group released its places and backs off"
    )


def backing_off_message(group_key: str, backoff_s: float) -> str:
    return f"pod group {group_key} backs off for {backoff_s:g}s after a failed attempt"


def min_resources_message(group_key: str, gap: Mapping[str, int]) -> str:
    """Coscheduling's "resource gap", with the amounts missing from the free capacity."""
    missing = ", ".join(f"{name}: {format_amount(name, amount)}" for name, amount in gap.items())
    return (
        f"pod group {group_key}: too little free capacity for minResources, resource gap: {missing}"
    )


def no_domain_message(group_key: str, topology: GangTopology, members: int) -> str:
    required_by = (
        "spec.schedulingConstraints.topology"
        if group_key.startswith(NATIVE_KEY_PREFIX)
        else f"{TOPOLOGY_POLICY_ANNOTATION}: required"
    )
    return (
        f"pod group {group_key}: no nodes sharing one {topology.label_key} value have room "
        f"for {members} members ({required_by})"
    )


def format_amount(name: str, amount: int) -> str:
    return f"{amount}m" if name == CPU else str(amount)


# -- minResources ----------------------------------------------------------------------------


def free_capacity(
    snapshot: ClusterSnapshot, names: Iterable[str], group_key: str
) -> dict[str, int]:
    """Allocatable minus requested over every node, per resource, as Coscheduling's
    CheckClusterResource sums it: the group's own placed members (bound or holding a place)
    are counted as free, since they are part of what the group needs. ``pods`` is the pod
    count the nodes still admit."""
    slots = [slot for slot, _ in snapshot.iter_nodes()]
    own = [
        entry
        for entry in snapshot.pods.values()
        if entry.slot >= 0 and group_key_of_model(entry.pod) == group_key
    ]
    free: dict[str, int] = {}
    for name in names:
        if name == PODS:
            total = sum(int(snapshot.allowed_pods[s]) - len(snapshot.node_pods[s]) for s in slots)
            total += len(own)
        else:
            allocatable, requested = snapshot.resource_arrays(name)
            total = sum(max(int(allocatable[s]) - int(requested[s]), 0) for s in slots)
            total += sum(entry.pod.requests.get(name, 0) for entry in own)
        free[name] = total
    return free


def resource_gap(spec: PodGroupSpec, free: Mapping[str, int]) -> dict[str, int]:
    """What ``free`` lacks of the group's minResources plus ``pods: minMember``; {} if none."""
    wanted = dict(spec.min_resources)
    wanted[PODS] = max(wanted.get(PODS, 0), spec.min_member)
    return {
        name: amount - free.get(name, 0)
        for name, amount in sorted(wanted.items())
        if amount > free.get(name, 0)
    }


def group_key_of_model(pod: Pod) -> str | None:
    """`group_key_of` for a parsed pod."""
    return _group_key(pod.namespace, pod.pod_group_name, pod.labels)


# -- topology ----------------------------------------------------------------------------------


def in_domain(pod: JsonDict, label_key: str, value: str) -> JsonDict:
    """A copy of ``pod`` that may only land on nodes labelled ``label_key=value`` (a
    nodeSelector entry: ANDed with whatever the pod already asks for)."""
    spec = dict(pod.get("spec") or {})
    spec["nodeSelector"] = {**(spec.get("nodeSelector") or {}), label_key: value}
    return {**pod, "spec": spec}


def domain_of_placed(label_values: Iterable[str | None]) -> str | None:
    """The value most placed members share (ties: the smallest), None if none is labelled."""
    counts = Counter(value for value in label_values if value is not None)
    if not counts:
        return None
    return min(counts.items(), key=lambda item: (-item[1], item[0]))[0]


def plan_domain(
    label_key: str,
    values: Iterable[str],
    members: Sequence[JsonDict],
    place: Callable[[JsonDict], str | None],
    undo: Callable[[], None],
) -> str | None:
    """The first value (sorted) whose nodes take every one of ``members`` at once.

    ``place`` schedules one pod and, when it finds a node, counts it there (assumes it) for
    the rest of this trial; ``undo`` forgets every trial placement. Deterministic: the same
    cluster gives the same domain, so a retried gang goes back to the same place.
    """
    for value in sorted(set(values)):
        try:
            if all(place(in_domain(member, label_key, value)) is not None for member in members):
                return value
        finally:
            undo()
    return None


# -- status ------------------------------------------------------------------------------------


def group_status(
    min_member: int,
    members: Sequence[JsonDict],
    holding: int,
    turned_away: bool,
    previous: Mapping[str, Any],
    now: str,
) -> JsonDict:
    """The PodGroup's status from its members, as scheduler-plugins' PodGroup controller
    computes it (v1alpha1 phases), plus what only the scheduler knows: places held
    (Scheduling) and a group turned away since it last bound (Pending).

    ``members`` are every pod labelled into the group, finished ones included.
    """
    phases = Counter(str((pod.get("status") or {}).get("phase") or "") for pod in members)
    running, succeeded, failed = phases["Running"], phases["Succeeded"], phases["Failed"]
    scheduled = sum(1 for pod in members if (pod.get("spec") or {}).get("nodeName"))
    live = len(members) - succeeded - failed
    if succeeded >= min_member:
        phase = PHASE_FINISHED
    elif failed and failed + running + succeeded >= min_member:
        phase = PHASE_FAILED
    elif running + succeeded >= min_member:
        phase = PHASE_RUNNING
    elif scheduled >= min_member:
        phase = PHASE_SCHEDULED
    elif holding or scheduled:
        phase = PHASE_SCHEDULING
    elif turned_away or live < min_member:
        phase = PHASE_PENDING
    else:
        phase = PHASE_PRE_SCHEDULING
    status: JsonDict = {
        "phase": phase,
        "scheduled": scheduled,
        "running": running,
        "succeeded": succeeded,
        "failed": failed,
    }
    occupied = sorted(
        f"{(pod.get('metadata') or {}).get('namespace') or 'default'}/{ref.get('name')}"
        for pod in members[:1]
        for ref in (pod.get("metadata") or {}).get("ownerReferences") or []
    )
    if occupied:
        status["occupiedBy"] = ",".join(occupied)
    elif previous.get("occupiedBy"):
        status["occupiedBy"] = previous["occupiedBy"]
    start = previous.get("scheduleStartTime")
    if not start and phase not in (PHASE_PENDING, PHASE_PRE_SCHEDULING):
        start = now
    if start:
        status["scheduleStartTime"] = start
    return status


NATIVE_SCHEDULED_CONDITION: Final = "PodGroupInitiallyScheduled"


def native_group_condition(
    min_member: int,
    members: Sequence[JsonDict],
    problem: tuple[str, str] | None,
    previous: Mapping[str, Any],
    now: str,
) -> JsonDict | None:
    """The `PodGroupInitiallyScheduled` condition of a native PodGroup, as kube-scheduler keeps
    it: True (for good) once `minCount` members have a node; False with reason `Unschedulable`
    while the group is turned away; None (no condition yet) while it is being tried."""
    old = next(
        (
            c
            for c in previous.get("conditions") or []
            if isinstance(c, Mapping) and c.get("type") == NATIVE_SCHEDULED_CONDITION
        ),
        None,
    )
    if old is not None and old.get("status") == "True":
        return dict(old)  # terminal: never reverts, even if members are evicted later
    scheduled = sum(1 for pod in members if (pod.get("spec") or {}).get("nodeName"))
    if scheduled >= min_member:
        status, reason, message = "True", "Scheduled", "minCount members have a node"
    elif problem is not None:
        status, reason, message = "False", "Unschedulable", problem[1]
    else:
        return None
    same = old is not None and old.get("status") == status
    return {
        "type": NATIVE_SCHEDULED_CONDITION,
        "status": status,
        "reason": reason,
        "message": message[:1024],
        "lastTransitionTime": (old or {}).get("lastTransitionTime") if same else now,
    }


@dataclass
class _Waiting:
    since: float
    members: dict[str, tuple[Any, str]] = field(default_factory=dict)  # pod key -> (item, node)


@dataclass
class GangCoordinator:
    """Thread-safe gang state: known PodGroups and the members holding places."""

    clock: Callable[[], float] = time.monotonic
    _groups: dict[str, PodGroupSpec] = field(default_factory=dict, init=False)
    _waiting: dict[str, _Waiting] = field(default_factory=dict, init=False)
    _backoff_until: dict[str, float] = field(default_factory=dict, init=False)
    _domains: dict[str, str] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def upsert_group(self, obj: JsonDict, native: bool | None = None) -> None:
        spec = PodGroupSpec.from_json(obj, native)
        with self._lock:
            if self._groups.get(spec.key) not in (None, spec):
                self._backoff_until.pop(spec.key, None)  # a changed spec deserves a try now
            self._groups[spec.key] = spec

    # -- group back-off (Coscheduling's podGroupBackoff) ---------------------------------

    def back_off(self, group_key: str, seconds: float) -> None:
        with self._lock:
            self._backoff_until[group_key] = self.clock() + seconds
            self._domains.pop(group_key, None)

    def backoff_remaining(self, group_key: str) -> float:
        """Seconds the group still backs off; 0 when it may be attempted."""
        with self._lock:
            until = self._backoff_until.get(group_key)
            return 0.0 if until is None else max(until - self.clock(), 0.0)

    def backoffs_ended(self) -> list[str]:
        """Groups whose back-off is over (each reported once): their members go back to active."""
        now = self.clock()
        with self._lock:
            ended = [key for key, until in self._backoff_until.items() if until <= now]
            for key in ended:
                del self._backoff_until[key]
            return ended

    # -- topology domain chosen for the attempt in progress ----------------------------------

    def domain(self, group_key: str) -> str | None:
        with self._lock:
            return self._domains.get(group_key)

    def choose_domain(self, group_key: str, value: str) -> None:
        with self._lock:
            self._domains[group_key] = value

    def delete_group(self, obj: JsonDict, native: bool | None = None) -> None:
        with self._lock:
            self._groups.pop(group_key_of_podgroup(obj, native), None)

    def group(self, key: str) -> PodGroupSpec | None:
        with self._lock:
            return self._groups.get(key)

    def held_nodes(self, group_key: str) -> list[str]:
        with self._lock:
            waiting = self._waiting.get(group_key)
            return [] if waiting is None else [node for _, node in waiting.members.values()]

    def is_waiting(self, group_key: str, pod_key: str) -> bool:
        with self._lock:
            waiting = self._waiting.get(group_key)
            return waiting is not None and pod_key in waiting.members

    def waiting_count(self, group_key: str) -> int:
        with self._lock:
            waiting = self._waiting.get(group_key)
            return 0 if waiting is None else len(waiting.members)

    def hold(
        self, group_key: str, pod_key: str, item: Any, node: str, bound_members: int
    ) -> list[tuple[Any, str]] | None:
        """Record a member holding ``node``; every held member once the gang is complete."""
        with self._lock:
            spec = self._groups.get(group_key)
            waiting = self._waiting.setdefault(group_key, _Waiting(since=self.clock()))
            waiting.members[pod_key] = (item, node)
            min_member = spec.min_member if spec is not None else 1
            if len(waiting.members) + bound_members < min_member:
                return None
            del self._waiting[group_key]
            self._domains.pop(group_key, None)
            return list(waiting.members.values())

    def release(self, group_key: str) -> list[tuple[Any, str]]:
        """Let go of every place the group holds (reject); the members held."""
        with self._lock:
            waiting = self._waiting.pop(group_key, None)
            self._domains.pop(group_key, None)
            return [] if waiting is None else list(waiting.members.values())

    def drop(self, group_key: str, pod_key: str) -> None:
        """A waiting member is gone (deleted)."""
        with self._lock:
            waiting = self._waiting.get(group_key)
            if waiting is not None:
                waiting.members.pop(pod_key, None)
                if not waiting.members:
                    del self._waiting[group_key]

    def expired(self) -> dict[str, list[tuple[Any, str]]]:
        """Groups whose first held place is older than their timeout, released."""
        now = self.clock()
        out: dict[str, list[tuple[Any, str]]] = {}
        with self._lock:
            for key, waiting in list(self._waiting.items()):
                spec = self._groups.get(key)
                timeout = spec.timeout_s if spec is not None else DEFAULT_TIMEOUT_S
                if now - waiting.since >= timeout:
                    out[key] = list(waiting.members.values())
                    del self._waiting[key]
                    self._domains.pop(key, None)
        return out
