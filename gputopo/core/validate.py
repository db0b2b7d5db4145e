"""The one validation gate every label, taint and annotation passes before it is sent.

Kubernetes rejects a whole Node update when one label is invalid, so nothing invalid may reach
the API server. Rather than drop a label, the gate repairs it deterministically — the same input
always yields the same output — and records what it changed: invalid characters are replaced,
over-long values become a readable prefix plus ``-`` plus a short hash of the original. Every
change is logged and counted in a :class:`ValidationCounter` that metrics can read.

Rules (apimachinery ``validation.IsQualifiedName`` / ``IsValidLabelValue``):

* key: optional DNS-1123 subdomain prefix (<= 253 chars) + ``/`` + name (<= 63 chars,
  ``[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?``);
* label value and taint value: empty, or <= 63 chars of the same charset;
* annotations: keys as above; all keys plus values on one object <= 256 KiB in total.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from gputopo.core.contract import ANNOTATIONS_TOTAL_LIMIT_BYTES, TAINT_EFFECTS

log = logging.getLogger(__name__)

NAME_MAX: Final = 63
VALUE_MAX: Final = 63
PREFIX_MAX: Final = 253
HASH_LEN: Final = 10

_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN_RE = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$")
_INVALID_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
_INVALID_PREFIX_CHARS = re.compile(r"[^a-z0-9.-]")
_EDGE = "-_."


class ValidationError(ValueError):
    """Something cannot be made valid (a bad taint effect, annotations over the size limit)."""


def is_qualified_name(key: str) -> bool:
    prefix, sep, name = key.rpartition("/")
    if sep and (not prefix or len(prefix) > PREFIX_MAX or not _SUBDOMAIN_RE.match(prefix)):
        return False
    return 0 < len(name) <= NAME_MAX and bool(_NAME_RE.match(name))


def is_label_value(value: str) -> bool:
    return value == "" or (len(value) <= VALUE_MAX and bool(_NAME_RE.match(value)))


def is_taint_effect(effect: str) -> bool:
    return effect in TAINT_EFFECTS


def is_dns_subdomain(name: str) -> bool:
    """Kubernetes' ``IsDNS1123Subdomain``, the rule for object names such as a Node's: at most
    253 characters of lower-case letters, digits, '-' and '.', alphanumeric at each end."""
    return 0 < len(name) <= PREFIX_MAX and _SUBDOMAIN_RE.fullmatch(name) is not None


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_LEN]


def _shorten(readable: str, original: str, limit: int) -> str:
    """``readable`` cut to fit ``limit`` with ``-<hash of original>`` appended; always valid."""
    digest = short_hash(original)
    head = readable[: limit - HASH_LEN - 1].rstrip(_EDGE)
    return f"{head}-{digest}" if head else digest


def repair_value(value: str, limit: int = VALUE_MAX) -> str:
    """A valid label value for ``value``: unchanged when already valid."""
    if len(value) <= limit and is_label_value(value):
        return value
    cleaned = _INVALID_NAME_CHARS.sub("_", value).strip(_EDGE)
    if cleaned and len(cleaned) <= limit and _NAME_RE.match(cleaned):
        return cleaned
    return _shorten(cleaned, value, limit)


def repair_name(name: str) -> str:
    """A valid key name part; a changed name always carries a hash so two keys cannot merge."""
    if 0 < len(name) <= NAME_MAX and _NAME_RE.match(name):
        return name
    cleaned = _INVALID_NAME_CHARS.sub("_", name).strip(_EDGE)
    return _shorten(cleaned, name, NAME_MAX)


def repair_prefix(prefix: str) -> str:
    if len(prefix) <= PREFIX_MAX and _SUBDOMAIN_RE.match(prefix):
        return prefix
    labels = []
    for part in _INVALID_PREFIX_CHARS.sub("-", prefix.lower()).split("."):
        part = part.strip("-")[:NAME_MAX].strip("-")
        if part:
            labels.append(part)
    labels.append(short_hash(prefix))  # a changed prefix must not collide with a real one
    repaired = ".".join(labels)
    if len(repaired) > PREFIX_MAX:
        repaired = repaired[-PREFIX_MAX:].lstrip("-.")
    return repaired


def repair_key(key: str) -> str:
    prefix, sep, name = key.rpartition("/")
    if sep and prefix == "":
        # "/name" has an empty prefix: fold the slash into the name.
        return repair_name(key)
    if not sep:
        return repair_name(name)
    return f"{repair_prefix(prefix)}/{repair_name(name)}"


@dataclass
class ValidationCounter:
    """How many keys/values the gate changed or refused, by kind; safe to read from a collector."""

    keys_repaired: int = 0
    values_repaired: int = 0
    values_shortened: int = 0
    annotations_rejected: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, kind: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, kind, getattr(self, kind) + amount)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {
                "keys_repaired": self.keys_repaired,
                "values_repaired": self.values_repaired,
                "values_shortened": self.values_shortened,
                "annotations_rejected": self.annotations_rejected,
            }


@dataclass(frozen=True)
class Repair:
    """One change the gate made, for logs and ``--dry-run`` output."""

    kind: str  # "label key", "label value", "taint key", "taint value"
    where: str
    original: str
    repaired: str


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str

    def identity(self) -> str:
        return f"{self.key}:{self.effect}"

    def to_dict(self) -> dict[str, str]:
        return {"key": self.key, "value": self.value, "effect": self.effect}


class ValidationGate:
    """Validates and deterministically repairs everything before it is published."""

    def __init__(self, counter: ValidationCounter | None = None) -> None:
        self.counter = counter if counter is not None else ValidationCounter()
        self.repairs: list[Repair] = []

    def _record(self, kind: str, where: str, original: str, repaired: str) -> None:
        self.repairs.append(Repair(kind, where, original, repaired))
        log.warning(
            "validation: %s %s was invalid (%r); publishing %r instead",
            kind,
            where,
            original,
            repaired,
        )

    def key(self, key: str, kind: str = "label key") -> str:
        if is_qualified_name(key):
            return key
        repaired = repair_key(key)
        self.counter.add("keys_repaired")
        self._record(kind, repr(key), key, repaired)
        return repaired

    def value(self, value: str, where: str, kind: str = "label value") -> str:
        if is_label_value(value):
            return value
        repaired = repair_value(value)
        self.counter.add("values_shortened" if len(value) > VALUE_MAX else "values_repaired")
        self._record(kind, where, value, repaired)
        return repaired

    def labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        result: dict[str, str] = {}
        for key in sorted(labels):
            valid_key = self.key(key)
            valid_value = self.value(labels[key], f"of label {valid_key}")
            if valid_key in result and result[valid_key] != valid_value:
                raise ValidationError(
                    f"labels {key!r} and another key both become {valid_key!r} after repair"
                )
            result[valid_key] = valid_value
        return result

    def taint(self, key: str, value: str, effect: str) -> Taint:
        if not is_taint_effect(effect):
            raise ValidationError(
                f"taint effect {effect!r} for {key!r} is not one of {', '.join(TAINT_EFFECTS)}"
            )
        valid_key = self.key(key, "taint key")
        return Taint(valid_key, self.value(value, f"of taint {valid_key}", "taint value"), effect)

    def annotations(
        self, annotations: Mapping[str, str], other_annotations: Mapping[str, str]
    ) -> dict[str, str]:
        """Keys repaired; refuses (raises) when the object's annotations would exceed 256 KiB."""
        result = {self.key(key, "annotation key"): value for key, value in annotations.items()}
        merged = {**other_annotations, **result}
        total = annotation_bytes(merged)
        if total > ANNOTATIONS_TOTAL_LIMIT_BYTES:
            self.counter.add("annotations_rejected")
            largest = max(result, key=lambda k: len(result[k])) if result else "(none)"
            raise ValidationError(
                f"annotations would total {total} bytes, over Kubernetes' "
                f"{ANNOTATIONS_TOTAL_LIMIT_BYTES}-byte limit (largest of ours: {largest})"
            )
        return result


def annotation_bytes(annotations: Mapping[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())
