"""The scoring profile: which scores count and how much, loaded from YAML with validation.

The default ships as package data (`scheduler/profiles/default.yaml`); a user file has the same
shape and is validated field by field, with one-line errors naming the file and the field:
the file is read through `gputopo.core.documents` (size, depth, aliases, numbers bounded) and its
sections decoded by `gputopo.core.decode` into frozen dataclasses that refuse unknown keys.

Score weights are keyed by plugin name (`scores.<name>`, the plugin's `name`); the default
profile names every score plugin, and a user profile may weight only those.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Final

from gputopo.core.decode import DecodeError, decode, decode_value, wire
from gputopo.core.documents import DocumentError, load_yaml, read_text
from gputopo.scheduler.errors import SchedulerInputError

FIT_STRATEGIES: Final = ("LeastAllocated", "MostAllocated")


@dataclass(frozen=True, slots=True)
class SchedulerProfile:
    weights: Mapping[str, int]  # by score plugin name, in the order diagnosis shows scores
    fit_strategy: str
    fit_resources: tuple[tuple[str, int], ...]
    balanced_resources: tuple[tuple[str, int], ...]
    hard_pod_affinity_weight: int
    # GPU reservations (scheduler/reservation.py): pods requesting at least this many GPUs
    # (0: never) get a node held for them, for at most reservation_ttl_s seconds.
    reservation_min_gpus: int = 8
    reservation_ttl_s: int = 300
    # Headroom (scheduler/plugins/headroom.py): nodes with an NVLink domain of at least this many
    # GPUs are kept for pods of that many GPUs while smaller pods fit elsewhere (0: off).
    headroom_min_gpus: int = 8
    # Node sampling (scheduler/framework.py, docs/scheduling.md): kube-scheduler's
    # percentageOfNodesToScore for pods without GPUs (0: adaptive, 50 - nodes/125 %, at least
    # 5 % and 100 nodes; 100: all), and the same for pods that request GPUs (default 100: every
    # feasible node scored, topology fit decides).
    percentage_of_nodes_to_score: int = 0
    gpu_percentage_of_nodes_to_score: int = 100

    def weight(self, plugin: str) -> int:
        return self.weights.get(plugin, 0)


MAX_PROFILE_BYTES: Final = 1024 * 1024  # the shipped profile is 3 KB
MAX_GPUS: Final = 1024  # reservation.minGpus and headroom.minGpus (0: off)


# --- the document's sections, decoded by gputopo.core.decode (unknown keys are refused) ----------


@dataclass(frozen=True)
class _ResourceWeight:
    name: str
    weight: int = field(default=1, metadata=wire(minimum=1, maximum=100))


@dataclass(frozen=True)
class _FitSection:
    strategy: str | None = field(default=None, metadata=wire(choices=FIT_STRATEGIES))
    resources: tuple[_ResourceWeight, ...] | None = None


@dataclass(frozen=True)
class _BalancedSection:
    resources: tuple[_ResourceWeight, ...] | None = None


@dataclass(frozen=True)
class _InterPodAffinitySection:
    hard_pod_affinity_weight: int | None = field(
        default=None, metadata=wire(key="hardPodAffinityWeight", minimum=0, maximum=100)
    )


@dataclass(frozen=True)
class _ReservationSection:
    min_gpus: int | None = field(
        default=None, metadata=wire(key="minGpus", minimum=0, maximum=MAX_GPUS)
    )
    ttl_seconds: int | None = field(
        default=None, metadata=wire(key="ttlSeconds", minimum=1, maximum=86400)
    )


@dataclass(frozen=True)
class _HeadroomSection:
    min_gpus: int | None = field(
        default=None, metadata=wire(key="minGpus", minimum=0, maximum=MAX_GPUS)
    )


@dataclass(frozen=True)
class _ProfileDocument:
    """The whole file but ``scores``, whose keys are plugin names and are checked by hand."""

    api_version: Any = field(default=None, metadata=wire(key="apiVersion"))
    kind: Any = None
    scores: Any = None
    fit: _FitSection | None = field(default=None, metadata=wire(key="nodeResourcesFit"))
    balanced: _BalancedSection | None = field(
        default=None, metadata=wire(key="nodeResourcesBalancedAllocation")
    )
    inter_pod_affinity: _InterPodAffinitySection | None = field(
        default=None, metadata=wire(key="interPodAffinity")
    )
    reservation: _ReservationSection | None = None
    headroom: _HeadroomSection | None = None
    percentage_of_nodes_to_score: int | None = field(
        default=None, metadata=wire(key="percentageOfNodesToScore", minimum=0, maximum=100)
    )
    gpu_percentage_of_nodes_to_score: int | None = field(
        default=None, metadata=wire(key="gpuPercentageOfNodesToScore", minimum=0, maximum=100)
    )


def _fail(source: str, path: str, problem: str) -> SchedulerInputError:
    return SchedulerInputError(f"profile {source}: {path}: {problem}")


def _scores(
    source: str, value: object, names: frozenset[str], weights: dict[str, int]
) -> dict[str, int]:
    """``scores``: a weight in 0..100 per score plugin the default profile names."""
    if value is None:
        return weights
    if not isinstance(value, Mapping):
        raise _fail(source, "scores", f"expected an object, got {type(value).__name__}")
    allowed = names or frozenset(str(key) for key in value)
    for plugin, weight in value.items():
        if plugin not in allowed:
            raise _fail(
                source, f"scores.{plugin}", f"unknown field (allowed: {', '.join(sorted(allowed))})"
            )
        try:
            weights[str(plugin)] = decode_value(int, weight, f"scores.{plugin}")
        except DecodeError as error:
            raise _fail(source, error.path, error.problem) from None
        if not 0 <= weights[str(plugin)] <= 100:
            raise _fail(source, f"scores.{plugin}", f"expected an integer in 0..100, got {weight}")
    return weights


def _resources(
    source: str,
    path: str,
    value: tuple[_ResourceWeight, ...] | None,
    default: tuple[tuple[str, int], ...],
) -> tuple[tuple[str, int], ...]:
    if value is None:
        return default
    if not value:
        raise _fail(source, path, "expected a non-empty list of {name, weight}")
    for index, item in enumerate(value):
        if not item.name or item.name == "pods":
            raise _fail(
                source, f"{path}[{index}].name", f"expected a resource name, got {item.name!r}"
            )
    return tuple((item.name, item.weight) for item in value)


def _pick(value: int | None, default: int) -> int:
    return default if value is None else value


def parse_profile(document: object, source: str) -> SchedulerProfile:
    """Validate a profile document; missing sections take the shipped defaults."""
    base = default_profile() if source != _DEFAULT_SOURCE else None
    if not isinstance(document, Mapping):
        if document is not None:
            raise _fail(source, "document", f"expected a mapping, got {type(document).__name__}")
        document = {}
    kind = document.get("kind", "SchedulerProfile")
    if kind != "SchedulerProfile":
        raise _fail(source, "kind", f"expected SchedulerProfile, got {kind!r}")
    try:
        top = decode(_ProfileDocument, document, "", unknown="reject")
    except DecodeError as error:
        raise _fail(source, error.path.lstrip("."), error.problem) from None
    scores = top.scores
    names = frozenset(base.weights if base else scores if isinstance(scores, Mapping) else ())
    weights = _scores(source, scores, names, dict(base.weights) if base else {})
    fit = top.fit or _FitSection()
    balanced = top.balanced or _BalancedSection()
    inter_pod = top.inter_pod_affinity or _InterPodAffinitySection()
    reservation = top.reservation or _ReservationSection()
    headroom = top.headroom or _HeadroomSection()
    return SchedulerProfile(
        weights=weights,
        fit_strategy=fit.strategy or (base.fit_strategy if base else "LeastAllocated"),
        fit_resources=_resources(
            source,
            "nodeResourcesFit.resources",
            fit.resources,
            base.fit_resources if base else (("cpu", 1), ("memory", 1)),
        ),
        balanced_resources=_resources(
            source,
            "nodeResourcesBalancedAllocation.resources",
            balanced.resources,
            base.balanced_resources if base else (("cpu", 1), ("memory", 1)),
        ),
        hard_pod_affinity_weight=_pick(
            inter_pod.hard_pod_affinity_weight, base.hard_pod_affinity_weight if base else 1
        ),
        reservation_min_gpus=_pick(reservation.min_gpus, base.reservation_min_gpus if base else 8),
        reservation_ttl_s=_pick(reservation.ttl_seconds, base.reservation_ttl_s if base else 300),
        headroom_min_gpus=_pick(headroom.min_gpus, base.headroom_min_gpus if base else 8),
        percentage_of_nodes_to_score=_pick(
            top.percentage_of_nodes_to_score, base.percentage_of_nodes_to_score if base else 0
        ),
        gpu_percentage_of_nodes_to_score=_pick(
            top.gpu_percentage_of_nodes_to_score,
            base.gpu_percentage_of_nodes_to_score if base else 100,
        ),
    )


_DEFAULT_SOURCE = "scheduler/profiles/default.yaml"


@cache
def default_profile() -> SchedulerProfile:
    text = resources.files("gputopo.scheduler").joinpath("profiles/default.yaml").read_text()
    return parse_profile(load_yaml(text, source=_DEFAULT_SOURCE), _DEFAULT_SOURCE)


def load_profile(path: str | Path) -> SchedulerProfile:
    """Load and validate a user profile file (at most :data:`MAX_PROFILE_BYTES`, UTF-8, read
    through gputopo.core.documents: depth, aliases and numbers bounded)."""
    try:
        text = read_text(path, what="profile", max_bytes=MAX_PROFILE_BYTES)
        document = load_yaml(text, source=f"profile {path}")
    except DocumentError as error:
        raise SchedulerInputError(str(error)) from None
    return parse_profile(document, str(path))
