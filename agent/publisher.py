"""Publish labels, taints and annotations to the agent's own Node — and touch nothing else.

Rules (docs/publishing.md):

* Ownership. The label keys and taints (key + effect) the agent wrote are recorded in the
  ``<prefix>/owned-labels`` and ``<prefix>/owned-taints`` annotations. Only those, and the
  contract's own annotations, are ever changed or removed. An ``nvidia.com/*`` label already on
  the Node that the agent does not own (GPU Feature Discovery runs too) is left alone; a
  ``<prefix>/*`` key is the agent's namespace and is taken over.
* Removal with hysteresis. An owned key is removed only after it has been absent from
  ``removal_after`` consecutive *successful* discoveries (misses are kept in the
  ``<prefix>/pending-removal`` annotation, so a restart does not reset them). A discovery that
  failed — NVML down while GPUs sit on the PCI bus — publishes nothing at all.
* Zero writes when nothing changed. The desired state is computed and compared with the Node
  read from the API server; only a difference is written, so a restart writes nothing.
* Optimistic concurrency. A write is a JSON merge patch carrying the ``resourceVersion`` that
  was read; ``spec.taints`` is a list that others change too, so a 409 Conflict means "re-read,
  re-plan, retry", and a taint someone added in between survives.
* API errors (5xx, 429, connection failures) are retried with capped exponential backoff and
  jitter; the publisher reports them and never raises them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from gputopo.agent.annotation import topology_annotation_value
from gputopo.agent.labels import LabelOptions, compute_labels
from gputopo.agent.sla import SlaHysteresis, SlaState, SlaStateError, assess
from gputopo.agent.taints import TaintOptions, compute_taints
from gputopo.agent.topology import NodeTopology
from gputopo.core.contract import (
    DEFAULT_CONTRACT,
    DEFAULT_HEALTH_TAINT_EFFECT,
    DEFAULT_SLA_TAINT_EFFECT,
    Contract,
    format_key_list,
    parse_key_list,
)
from gputopo.core.retry import Backoff, is_retryable, status_of
from gputopo.core.validate import Taint, ValidationError, ValidationGate

log = logging.getLogger(__name__)

FIELD_MANAGER: Final = "gputopo-agent"
MERGE_PATCH: Final = "application/merge-patch+json"


# --- options and desired state -------------------------------------------------------------------


@dataclass(frozen=True)
class PublishOptions:
    contract: Contract = field(default_factory=lambda: DEFAULT_CONTRACT)
    mig_strategy: str = "none"
    sla_taint_effect: str = DEFAULT_SLA_TAINT_EFFECT
    health_taint_effect: str = DEFAULT_HEALTH_TAINT_EFFECT
    removal_after: int = 3  # consecutive successful discoveries a key must be absent from
    sla_rise_after_observations: int = 3
    sla_rise_after_seconds: float = 120.0

    def __post_init__(self) -> None:
        if self.removal_after < 1:
            raise ValueError(f"removal_after must be >= 1, got {self.removal_after}")
        # Fail at start-up, with the flag named, rather than on the first publish.
        LabelOptions(mig_strategy=self.mig_strategy)
        self.taint_options()

    def taint_options(self) -> TaintOptions:
        return TaintOptions(self.sla_taint_effect, self.health_taint_effect, self.contract)


@dataclass(frozen=True)
class DesiredState:
    """What the agent wants on its Node, already through the validation gate."""

    labels: dict[str, str]
    taints: tuple[Taint, ...]
    annotations: dict[str, str]  # content annotations (topology); bookkeeping is added by plan()
    sla_state: SlaState | None


def is_successful_discovery(topology: NodeTopology) -> bool:
    """False when NVML is down while NVIDIA GPUs sit on the PCI bus: nothing may be concluded."""
    return topology.nvml.available or not topology.pci_only_gpus


def desired_state(
    topology: NodeTopology,
    options: PublishOptions,
    gate: ValidationGate,
    *,
    previous_sla: SlaState | None = None,
    hysteresis: SlaHysteresis | None = None,
) -> DesiredState:
    gate.repairs.clear()  # the repairs of this computation only; the counter keeps totals
    assessment = assess(topology)
    sla_state: SlaState | None = None
    if assessment is not None:
        hysteresis = hysteresis or SlaHysteresis(
            options.sla_rise_after_observations, options.sla_rise_after_seconds
        )
        sla_state = hysteresis.observe(previous_sla or SlaState(), assessment.score)
    score = sla_state.published if sla_state is not None else None
    labels = compute_labels(
        topology,
        LabelOptions(mig_strategy=options.mig_strategy, contract=options.contract, sla_score=score),
    )
    taints = compute_taints(topology, score, options.taint_options())
    return DesiredState(
        labels=gate.labels(labels),
        taints=tuple(gate.taint(t.key, t.value, t.effect) for t in taints),
        annotations={options.contract.topology_annotation: topology_annotation_value(topology)},
        sla_state=sla_state,
    )


# --- planning: desired state + current Node -> a merge patch -------------------------------------


@dataclass(frozen=True)
class NodeView:
    """The parts of a Node the publisher reads, as plain JSON values."""

    name: str
    resource_version: str
    labels: dict[str, str]
    annotations: dict[str, str]
    taints: tuple[dict[str, Any], ...]

    @classmethod
    def from_dict(cls, node: Mapping[str, Any]) -> NodeView:
        metadata = node.get("metadata") or {}
        spec = node.get("spec") or {}
        return cls(
            name=str(metadata.get("name", "")),
            resource_version=str(metadata.get("resourceVersion", "")),
            labels=dict(metadata.get("labels") or {}),
            annotations=dict(metadata.get("annotations") or {}),
            taints=tuple(dict(t) for t in spec.get("taints") or ()),
        )


@dataclass(frozen=True)
class Change:
    kind: str  # "label", "taint", "annotation"
    key: str
    old: str | None
    new: str | None

    def describe(self) -> str:
        if self.old is None:
            return f"+ {self.kind} {self.key}={self.new}"
        if self.new is None:
            return f"- {self.kind} {self.key}={self.old}"
        return f"~ {self.kind} {self.key}: {self.old} -> {self.new}"


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]
    patch: dict[str, Any]  # JSON merge patch (empty when nothing changes)
    skipped_foreign: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.changes


def _taint_identity(taint: Mapping[str, Any]) -> str:
    return f"{taint.get('key', '')}:{taint.get('effect', '')}"


def _taint_text(taint: Mapping[str, Any]) -> str:
    return f"{taint.get('value', '')}:{taint.get('effect', '')}"


def _parse_pending(text: str | None) -> dict[str, int]:
    if not text:
        return {}
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        log.warning("pending-removal annotation %r is not JSON; starting the count afresh", text)
        return {}
    if not isinstance(document, dict):
        return {}
    return {
        str(k): v for k, v in document.items() if isinstance(v, int) and not isinstance(v, bool)
    }


class _Planner:
    def __init__(self, node: NodeView, contract: Contract) -> None:
        self.node = node
        self.contract = contract
        self.changes: list[Change] = []
        self.labels: dict[str, str | None] = {}
        self.annotations: dict[str, str | None] = {}
        self.taints: list[dict[str, Any]] | None = None

    def set_label(self, key: str, value: str | None) -> None:
        old = self.node.labels.get(key)
        if old != value:
            self.labels[key] = value
            self.changes.append(Change("label", key, old, value))

    def set_annotation(self, key: str, value: str | None) -> None:
        old = self.node.annotations.get(key)
        if old != value:
            self.annotations[key] = value
            shown_old = None if old is None else _ellipsis(old)
            shown_new = None if value is None else _ellipsis(value)
            self.changes.append(Change("annotation", key, shown_old, shown_new))

    def set_taints(self, taints: list[dict[str, Any]]) -> None:
        before = {_taint_identity(t): t for t in self.node.taints}
        after = {_taint_identity(t): t for t in taints}
        for identity in sorted(before.keys() | after.keys()):
            old, new = before.get(identity), after.get(identity)
            if old is not None and new is not None and old.get("value") == new.get("value"):
                continue
            self.changes.append(
                Change(
                    "taint",
                    identity.rpartition(":")[0],
                    None if old is None else _taint_text(old),
                    None if new is None else _taint_text(new),
                )
            )
        if taints != list(self.node.taints):
            self.taints = taints

    def patch(self) -> dict[str, Any]:
        if not self.changes:
            return {}
        metadata: dict[str, Any] = {"resourceVersion": self.node.resource_version}
        if self.labels:
            metadata["labels"] = dict(self.labels)
        if self.annotations:
            metadata["annotations"] = dict(self.annotations)
        patch: dict[str, Any] = {"metadata": metadata}
        if self.taints is not None:
            patch["spec"] = {"taints": self.taints}
        return patch


def _ellipsis(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else f"{text[: limit - 3]}... ({len(text)} bytes)"


def plan(
    node: NodeView,
    desired: DesiredState,
    contract: Contract,
    removal_after: int,
) -> Plan:
    """The merge patch that brings ``node`` to ``desired`` under the ownership rules."""
    planner = _Planner(node, contract)
    owned_labels = parse_key_list(node.annotations.get(contract.owned_labels_annotation))
    owned_taints = parse_key_list(node.annotations.get(contract.owned_taints_annotation))
    pending = _parse_pending(node.annotations.get(contract.pending_removal_annotation))
    own_prefix = f"{contract.prefix}/"
    skipped: list[str] = []

    def foreign(key: str, owned: frozenset[str], identity: str) -> bool:
        """Someone else's key: present, not ours, and not in our own prefix."""
        return identity not in owned and not key.startswith(own_prefix)

    # labels
    new_owned_labels: set[str] = set()
    new_pending: dict[str, int] = {}
    for key, value in sorted(desired.labels.items()):
        if key in node.labels and foreign(key, owned_labels, key):
            skipped.append(f"label {key}")
            continue
        planner.set_label(key, value)
        new_owned_labels.add(key)
    for key in sorted(owned_labels - new_owned_labels):
        misses = pending.get(f"label:{key}", 0) + 1
        if misses >= removal_after or key not in node.labels:
            planner.set_label(key, None)
        else:
            new_owned_labels.add(key)
            new_pending[f"label:{key}"] = misses

    # taints (identified by key and effect)
    desired_taints = {t.identity(): t for t in desired.taints}
    new_owned_taints: set[str] = set()
    result_taints: list[dict[str, Any]] = []
    for existing in node.taints:
        identity = _taint_identity(existing)
        if identity in desired_taints:
            wanted = desired_taints[identity]
            if foreign(wanted.key, owned_taints, identity):
                skipped.append(f"taint {identity}")
                result_taints.append(existing)
                continue
            updated = dict(existing)
            updated["value"] = wanted.value
            result_taints.append(updated)
            new_owned_taints.add(identity)
        elif identity in owned_taints:
            misses = pending.get(f"taint:{identity}", 0) + 1
            if misses < removal_after:
                result_taints.append(existing)
                new_owned_taints.add(identity)
                new_pending[f"taint:{identity}"] = misses
        else:
            result_taints.append(existing)  # someone else's taint: kept as it is
    present = {_taint_identity(t) for t in node.taints}
    for identity, taint in desired_taints.items():
        if identity not in present:
            result_taints.append(taint.to_dict())
            new_owned_taints.add(identity)
    planner.set_taints(result_taints)

    # annotations: content, then bookkeeping
    for key, value in sorted(desired.annotations.items()):
        planner.set_annotation(key, value)
    planner.set_annotation(
        contract.owned_labels_annotation,
        format_key_list(new_owned_labels) if new_owned_labels else None,
    )
    planner.set_annotation(
        contract.owned_taints_annotation,
        format_key_list(new_owned_taints) if new_owned_taints else None,
    )
    planner.set_annotation(
        contract.pending_removal_annotation,
        json.dumps(new_pending, separators=(",", ":"), sort_keys=True) if new_pending else None,
    )
    planner.set_annotation(
        contract.sla_state_annotation,
        desired.sla_state.to_json() if desired.sla_state is not None else None,
    )
    return Plan(tuple(planner.changes), planner.patch(), tuple(skipped))


def plan_prune(node: NodeView, contract: Contract) -> Plan:
    """Remove every label, taint and annotation the agent owns; nothing else."""
    planner = _Planner(node, contract)
    owned_labels = parse_key_list(node.annotations.get(contract.owned_labels_annotation))
    owned_taints = parse_key_list(node.annotations.get(contract.owned_taints_annotation))
    for key in sorted(owned_labels):
        if key in node.labels:
            planner.set_label(key, None)
    planner.set_taints([t for t in node.taints if _taint_identity(t) not in owned_taints])
    for key in contract_annotations(contract):
        if key in node.annotations:
            planner.set_annotation(key, None)
    return Plan(tuple(planner.changes), planner.patch())


def contract_annotations(contract: Contract) -> tuple[str, ...]:
    return (
        contract.topology_annotation,
        contract.owned_labels_annotation,
        contract.owned_taints_annotation,
        contract.pending_removal_annotation,
        contract.sla_state_annotation,
    )


def fresh_node_publication(
    desired: DesiredState, contract: Contract
) -> tuple[dict[str, str], list[dict[str, str]], dict[str, str]]:
    """Labels, taints and annotations a publish would leave on a Node that has none of them."""
    result = plan(NodeView("", "", {}, {}, ()), desired, contract, removal_after=1)
    metadata = result.patch.get("metadata", {})
    labels = {k: v for k, v in metadata.get("labels", {}).items() if v is not None}
    annotations = {k: v for k, v in metadata.get("annotations", {}).items() if v is not None}
    taints = list(result.patch.get("spec", {}).get("taints", []))
    return labels, taints, annotations


# --- talking to the API server -------------------------------------------------------------------


class NodeApi(Protocol):
    """The slice of ``kubernetes.client.CoreV1Api`` the publisher uses; the agent runs with
    :class:`gputopo.core.kube.KubeClient`, which has the same names and keywords."""

    def read_node(self, name: str) -> Any: ...

    def patch_node(
        self, name: str, body: Any, *, field_manager: str | None = ..., _content_type: str = ...
    ) -> Any: ...


@dataclass
class PublishCounters:
    """Work counters for the agent's own metrics (read by the metrics collector)."""

    cycles: int = 0
    writes: int = 0
    unchanged: int = 0
    conflicts: int = 0
    retries: int = 0
    api_errors: int = 0
    discovery_failures: int = 0


@dataclass(frozen=True)
class PublishResult:
    status: str  # "unchanged", "written", "dry-run", "skipped", "error"
    changes: tuple[Change, ...] = ()
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("unchanged", "written", "dry-run")


class ApiCallFailed(Exception):
    """An API call failed for good (non-retryable, or retries exhausted)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def describe_api_error(error: BaseException) -> str:
    status = status_of(error)
    reason = getattr(error, "reason", None)
    if status is not None:
        body = getattr(error, "body", None)
        message = ""
        if isinstance(body, str | bytes):
            try:
                message = json.loads(body).get("message", "")
            except (ValueError, AttributeError):
                message = ""
        return f"HTTP {status} {reason or ''}".strip() + (f": {message}" if message else "")
    return f"{type(error).__name__}: {error}"


class Publisher:
    """Writes one Node's labels, taints and annotations (``publish``, ``prune``)."""

    def __init__(
        self,
        api: NodeApi,
        node_name: str,
        options: PublishOptions | None = None,
        *,
        gate: ValidationGate | None = None,
        backoff: Backoff | None = None,
        counters: PublishCounters | None = None,
        hysteresis: SlaHysteresis | None = None,
        max_conflict_retries: int = 8,
    ) -> None:
        self.api = api
        self.node_name = node_name
        self.options = options or PublishOptions()
        self.gate = gate or ValidationGate()
        self.backoff = backoff or Backoff()
        self.counters = counters or PublishCounters()
        self.hysteresis = hysteresis or SlaHysteresis(
            self.options.sla_rise_after_observations, self.options.sla_rise_after_seconds
        )
        self.max_conflict_retries = max_conflict_retries

    # API calls with retries

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        for attempt in range(self.backoff.max_attempts):
            try:
                return fn()
            except Exception as error:
                status = status_of(error)
                if status == 409:
                    raise
                if not is_retryable(error):
                    self.counters.api_errors += 1
                    raise ApiCallFailed(f"{what}: {describe_api_error(error)}", status) from None
                self.counters.api_errors += 1
                if attempt + 1 >= self.backoff.max_attempts:
                    raise ApiCallFailed(
                        f"{what}: {describe_api_error(error)} "
                        f"(gave up after {attempt + 1} attempts)",
                        status,
                    ) from None
                delay = self.backoff.delay(attempt)
                self.counters.retries += 1
                log.warning(
                    "%s failed (%s); retry %d in %.1fs",
                    what,
                    describe_api_error(error),
                    attempt + 1,
                    delay,
                )
                self.backoff.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def read_node(self) -> NodeView:
        node = self._call(
            f"reading Node {self.node_name}", lambda: self.api.read_node(self.node_name)
        )
        return NodeView.from_dict(_to_dict(node))

    def _patch(self, patch: dict[str, Any]) -> None:
        self._call(
            f"patching Node {self.node_name}",
            lambda: self.api.patch_node(
                self.node_name, patch, field_manager=FIELD_MANAGER, _content_type=MERGE_PATCH
            ),
        )

    # the two operations

    def publish(self, topology: NodeTopology, *, dry_run: bool = False) -> PublishResult:
        """One publish of a successful discovery; re-plans and retries on 409 Conflict."""
        self.counters.cycles += 1
        if not is_successful_discovery(topology):
            self.counters.discovery_failures += 1
            message = (
                f"discovery failed (NVML: {topology.nvml.error or 'unavailable'}, "
                f"{len(topology.pci_only_gpus)} GPU(s) on PCI); keeping the Node as it is"
            )
            log.warning("%s", message)
            return PublishResult("skipped", message=message)

        def make_plan(node: NodeView) -> Plan:
            desired = desired_state(
                topology,
                self.options,
                self.gate,
                previous_sla=self._previous_sla(node),
                hysteresis=self.hysteresis,
            )
            others = {k: v for k, v in node.annotations.items() if k not in desired.annotations}
            self.gate.annotations(desired.annotations, others)  # raises over the size limit
            return plan(node, desired, self.options.contract, self.options.removal_after)

        return self._apply(make_plan, dry_run)

    def prune(self, *, dry_run: bool = False) -> PublishResult:
        self.counters.cycles += 1
        return self._apply(lambda node: plan_prune(node, self.options.contract), dry_run)

    def _previous_sla(self, node: NodeView) -> SlaState | None:
        text = node.annotations.get(self.options.contract.sla_state_annotation)
        if text is None:
            return None
        try:
            return SlaState.from_json(text)
        except SlaStateError as error:
            log.warning("ignoring unreadable SLA state on Node %s: %s", self.node_name, error)
            return None

    def _apply(self, make_plan: Callable[[NodeView], Plan], dry_run: bool) -> PublishResult:
        try:
            for _ in range(self.max_conflict_retries):
                node = self.read_node()
                try:
                    node_plan = make_plan(node)
                except ValidationError as error:
                    log.error("not publishing to Node %s: %s", self.node_name, error)
                    return PublishResult("error", message=str(error))
                for skipped in node_plan.skipped_foreign:
                    log.info("leaving %s alone: another writer owns it", skipped)
                if node_plan.empty:
                    self.counters.unchanged += 1
                    return PublishResult("unchanged")
                if dry_run:
                    return PublishResult("dry-run", node_plan.changes)
                try:
                    self._patch(node_plan.patch)
                except Exception as error:
                    if status_of(error) != 409:
                        raise
                    self.counters.conflicts += 1
                    log.info("Node %s changed while writing (409); re-reading", self.node_name)
                    continue
                self.counters.writes += 1
                log.info(
                    "published %d change(s) to Node %s", len(node_plan.changes), self.node_name
                )
                return PublishResult("written", node_plan.changes)
            message = (
                f"Node {self.node_name} kept changing: gave up after "
                f"{self.max_conflict_retries} conflicts"
            )
        except ApiCallFailed as error:
            message = str(error)
        log.error("publishing to Node %s failed: %s", self.node_name, message)
        return PublishResult("error", message=message)


def _to_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return obj  # gputopo.core.kube answers JSON; only the official client's models go on
    from kubernetes.client import ApiClient

    result = ApiClient().sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
    assert isinstance(result, dict)
    return result


# --- one discovery + publish cycle ---------------------------------------------------------------


@dataclass(frozen=True)
class CycleResult:
    node: PublishResult
    nrt: PublishResult | None = None

    @property
    def ok(self) -> bool:
        return self.node.ok and (self.nrt is None or self.nrt.ok)


class NrtWriter(Protocol):
    def publish(
        self,
        topology: NodeTopology,
        available: Mapping[int, Mapping[str, int]] | None = None,
        *,
        dry_run: bool = False,
    ) -> PublishResult: ...


def run_cycle(
    discover: Callable[[], NodeTopology],
    publisher: Publisher,
    *,
    nrt: NrtWriter | None = None,
    available: Callable[[], Mapping[int, Mapping[str, int]]] | None = None,
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
    node_result = publisher.publish(topology, dry_run=dry_run)
    nrt_result = None
    if nrt is not None and is_successful_discovery(topology):
        nrt_result = nrt.publish(topology, available() if available else None, dry_run=dry_run)
    return CycleResult(node_result, nrt_result)
