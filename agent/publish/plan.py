"""Planning: desired state + the Node as read -> one JSON merge patch, under the ownership and
hysteresis rules of :mod:`gputopo.agent.publish` (pure; nothing here talks to the API server)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from gputopo.agent.publish.desired import DesiredState
from gputopo.agent.publish.nvidia_labels import (
    CORRECTED_MARKER,
    DEFAULT_NVIDIA_LABEL_MODE,
    LabelConflict,
    is_nvidia_key,
    label_holders,
    yielded_keys,
)
from gputopo.core.contract import (
    NVIDIA_PREFIX,
    Contract,
    format_key_list,
    parse_key_list,
)

log = logging.getLogger(__name__)

FIELD_MANAGER: Final = "gputopo-agent"


@dataclass(frozen=True)
class NodeView:
    """The parts of a Node the publisher reads, as plain JSON values."""

    name: str
    resource_version: str
    labels: dict[str, str]
    annotations: dict[str, str]
    taints: tuple[dict[str, Any], ...]
    # Label keys the API server's managedFields record as last set by the agent's field
    # manager: the record the agent re-derives ownership from when its annotation is gone.
    managed_labels: frozenset[str] = frozenset()
    # Annotation keys the agent's field manager holds; None where the Node carried no
    # managedFields at all (nothing to confirm or refute the ownership annotation with).
    managed_annotations: frozenset[str] | None = None
    # Label key -> every field manager managedFields records as holding it (who else writes
    # the nvidia.com/* keys: GPU Feature Discovery through NFD, a `kubectl label`).
    label_holders: Mapping[str, frozenset[str]] = field(default_factory=dict)
    uid: str = ""

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
            managed_labels=_managed_keys(metadata.get("managedFields"), "f:labels"),
            managed_annotations=(
                _managed_keys(metadata.get("managedFields"), "f:annotations")
                if metadata.get("managedFields")
                else None
            ),
            label_holders=label_holders(metadata.get("managedFields")),
            uid=str(metadata.get("uid", "")),
        )


def _managed_keys(entries: Any, kind: str, manager: str = FIELD_MANAGER) -> frozenset[str]:
    """Label (``f:labels``) or annotation (``f:annotations``) keys ``manager`` owns according
    to the Node's ``metadata.managedFields``."""
    keys: set[str] = set()
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, Mapping) or entry.get("manager") != manager:
            continue
        fields = entry.get("fieldsV1")
        metadata = fields.get("f:metadata") if isinstance(fields, Mapping) else None
        names = metadata.get(kind) if isinstance(metadata, Mapping) else None
        if isinstance(names, Mapping):
            keys.update(name[2:] for name in names if isinstance(name, str) and name[:2] == "f:")
    return frozenset(keys)


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
    # Entries of the ownership annotations naming keys the agent never writes (forged or
    # garbled): ignored, dropped from the annotation by this plan, and reported.
    ignored_ownership: tuple[str, ...] = ()
    # nvidia.com/* keys another writer holds with a value other than gputopo's: left alone.
    conflicts: tuple[LabelConflict, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.changes


@dataclass(frozen=True)
class Ownership:
    """What the agent owns on a Node: only keys it would publish itself.

    The ownership annotations are a claim anyone with write access to the Node can make, so an
    entry counts only when the contract says the agent writes such a key (its own prefix, the
    exact GFD-compatible ``nvidia.com/*`` set, its own taint keys); every other entry is
    ignored and reported. When managedFields shows that another writer last set the
    annotation, its ``nvidia.com/*`` entries also need managedFields to confirm them.

    Where the annotation is gone or garbled, ownership is re-derived from what the API server
    itself records: label keys that ``managedFields`` attributes to the agent's field manager,
    and taints with the agent's own keys.
    """

    labels: frozenset[str]
    taints: frozenset[str]
    ignored: tuple[str, ...]
    # Claimed nvidia.com/* keys that another field manager holds now (see
    # nvidia_labels.yielded_keys): not gputopo's to change or remove, whatever the claim says.
    yielded: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls,
        node: NodeView,
        contract: Contract,
        mode: str = DEFAULT_NVIDIA_LABEL_MODE,
        corrected: frozenset[str] = frozenset(),
    ) -> Ownership:
        claimed_labels = parse_key_list(node.annotations.get(contract.owned_labels_annotation))
        claimed_taints = parse_key_list(node.annotations.get(contract.owned_taints_annotation))
        labels = {key for key in claimed_labels if contract.may_own_label(key)}
        annotation = contract.owned_labels_annotation
        if (
            node.managed_annotations is not None
            and annotation in node.annotations
            and annotation not in node.managed_annotations
        ):
            # Someone else rewrote the annotation: its nvidia.com/* claims count only where
            # managedFields confirms the agent wrote the label (GFD's keys stay GFD's).
            labels = {
                key
                for key in labels
                if not key.startswith(f"{NVIDIA_PREFIX}/") or key in node.managed_labels
            }
        taints = {identity for identity in claimed_taints if contract.may_own_taint(identity)}
        ignored = [f"label {key}" for key in sorted(claimed_labels - labels)]
        ignored += [f"taint {identity}" for identity in sorted(claimed_taints - taints)]
        labels |= {
            key for key in node.managed_labels if key in node.labels and contract.may_own_label(key)
        }
        if not taints:  # the annotation is gone or garbled: the agent's own taint keys
            taints = {
                _taint_identity(taint)
                for taint in node.taints
                if contract.may_own_taint(_taint_identity(taint))
            }
        yielded = yielded_keys(
            frozenset(labels), node.label_holders, node.labels, mode, FIELD_MANAGER, corrected
        )
        return cls(frozenset(labels - yielded), frozenset(taints), tuple(ignored), yielded)


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
    nvidia_labels: str = DEFAULT_NVIDIA_LABEL_MODE,
) -> Plan:
    """The merge patch that brings ``node`` to ``desired`` under the ownership rules and the
    ``nvidia_labels`` mode (:mod:`.nvidia_labels`; ``off``: ``desired`` already has none)."""
    planner = _Planner(node, contract)
    pending = _parse_pending(node.annotations.get(contract.pending_removal_annotation))
    corrected = frozenset(
        marker.removeprefix(CORRECTED_MARKER)
        for marker in pending
        if marker.startswith(CORRECTED_MARKER)
    )
    ownership = Ownership.of(node, contract, nvidia_labels, corrected)
    owned_labels, owned_taints = ownership.labels, ownership.taints
    own_prefix = f"{contract.prefix}/"
    skipped: list[str] = []

    def foreign(key: str, owned: frozenset[str], identity: str) -> bool:
        """Someone else's key: present, not ours, and not in our own prefix."""
        return identity not in owned and not key.startswith(own_prefix)

    # labels
    complete = desired.complete
    health_keys = contract.health_label_keys()
    topology_keys = contract.topology_label_keys()
    new_owned_labels: set[str] = set()
    conflicts: list[LabelConflict] = []
    # A partial discovery counts nothing: every pending removal and value change waits as it is.
    new_pending: dict[str, int] = {} if complete else dict(pending)
    for key, value in sorted(desired.labels.items()):
        old = node.labels.get(key)
        if old is not None and foreign(key, owned_labels, key):
            skipped.append(f"label {key}")
            if key in ownership.yielded:
                # The claim stays until a write happens anyway: dropping it would be a write
                # of its own, and ownership is read from managedFields while it stands.
                new_owned_labels.add(key)
            if old != value and is_nvidia_key(key):
                others = node.label_holders.get(key, frozenset()) - {FIELD_MANAGER}
                conflicts.append(LabelConflict(key, value, old, tuple(sorted(others))))
            continue
        new_owned_labels.add(key)
        if (
            complete
            and is_nvidia_key(key)
            and old is not None
            and old != value
            and _held_by_others_only(node, key)
        ):
            # own mode: another writer overwrote a key gputopo wrote; corrected this once,
            # and the record of it makes the next overwrite a conflict (nvidia_labels).
            planner.set_label(key, value)
            new_pending[f"{CORRECTED_MARKER}{key}"] = 1
        elif old is None or old == value or key in health_keys:
            planner.set_label(key, value)
        elif not complete:
            continue  # a partial discovery keeps the last good value
        elif key in topology_keys:
            marker = f"value:{key}={value}"
            seen = pending.get(marker, 0) + 1
            if seen >= removal_after:
                planner.set_label(key, value)
            else:
                new_pending[marker] = seen
        else:
            planner.set_label(key, value)
    for key in sorted(owned_labels - new_owned_labels):
        if key not in node.labels:
            planner.set_label(key, None)
            continue
        if not complete and key not in health_keys:
            new_owned_labels.add(key)  # a partial discovery removes no topology value
            continue
        misses = pending.get(f"label:{key}", 0) + 1
        if misses >= removal_after:
            planner.set_label(key, None)
        else:
            new_owned_labels.add(key)
            new_pending[f"label:{key}"] = misses

    for marker in pending:  # a correction stays recorded while the key is claimed
        key = marker.removeprefix(CORRECTED_MARKER)
        if marker.startswith(CORRECTED_MARKER) and key in new_owned_labels:
            new_pending[marker] = 1

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
            if not complete or misses < removal_after:
                result_taints.append(existing)
                new_owned_taints.add(identity)
                if complete:
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
        if complete or key not in node.annotations:
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
    return Plan(
        tuple(planner.changes),
        planner.patch(),
        tuple(skipped),
        ownership.ignored,
        tuple(conflicts),
    )


def _held_by_others_only(node: NodeView, key: str) -> bool:
    holders = node.label_holders.get(key, frozenset())
    return bool(holders) and FIELD_MANAGER not in holders


def taints_only(full: Plan, contract: Contract) -> Plan | None:
    """The taint part of ``full`` (with its ownership record), or None when it changes no taint.

    What the writer still sends when the API server refuses the whole patch (an admission
    policy or webhook denying one label): a GPU that failed gets its health taint regardless.
    """
    spec = full.patch.get("spec") or {}
    if "taints" not in spec:
        return None
    metadata_in = full.patch.get("metadata") or {}
    metadata: dict[str, Any] = {"resourceVersion": metadata_in.get("resourceVersion", "")}
    owned_taints = contract.owned_taints_annotation
    annotations = metadata_in.get("annotations") or {}
    if owned_taints in annotations:
        metadata["annotations"] = {owned_taints: annotations[owned_taints]}
    changes = tuple(
        change
        for change in full.changes
        if change.kind == "taint" or (change.kind == "annotation" and change.key == owned_taints)
    )
    return Plan(changes, {"metadata": metadata, "spec": {"taints": spec["taints"]}})


def plan_prune(node: NodeView, contract: Contract, nvidia_labels: str = "defer") -> Plan:
    """Remove every label, taint and annotation the agent owns; nothing else (a key another
    writer took over, see :mod:`.nvidia_labels`, is not the agent's any more)."""
    planner = _Planner(node, contract)
    ownership = Ownership.of(node, contract, nvidia_labels)
    owned_labels, owned_taints = ownership.labels, ownership.taints
    for key in sorted(owned_labels):
        if key in node.labels:
            planner.set_label(key, None)
    planner.set_taints([t for t in node.taints if _taint_identity(t) not in owned_taints])
    for key in contract_annotations(contract):
        if key in node.annotations:
            planner.set_annotation(key, None)
    return Plan(tuple(planner.changes), planner.patch(), (), ownership.ignored)


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
