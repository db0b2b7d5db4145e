"""The scoring profile: which scores count and how much, loaded from YAML with validation.

The default ships as package data (`scheduler/profiles/default.yaml`); a user file has the same
shape and is validated field by field, with one-line errors naming the file and the field.

Score weights are keyed by plugin name (`scores.<name>`, the plugin's `name`); the default
profile names every score plugin, and a user profile may weight only those.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Final

import yaml

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

    def weight(self, plugin: str) -> int:
        return self.weights.get(plugin, 0)


_TOP_LEVEL = frozenset(
    {
        "apiVersion",
        "kind",
        "scores",
        "nodeResourcesFit",
        "nodeResourcesBalancedAllocation",
        "interPodAffinity",
        "reservation",
        "headroom",
    }
)


def _fail(source: str, path: str, problem: str) -> SchedulerInputError:
    return SchedulerInputError(f"profile {source}: {path}: {problem}")


def _int(source: str, path: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(source, path, f"expected an integer in {low}..{high}, got {value!r}")
    return value


def _mapping(source: str, path: str, value: object, allowed: frozenset[str]) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(source, path, f"expected a mapping, got {type(value).__name__}")
    for key in value:
        if key not in allowed:
            raise _fail(
                source,
                f"{path}.{key}" if path else str(key),
                f"unknown field, expected one of {sorted(allowed)}",
            )
    return value


def _field_int(
    source: str,
    section: str,
    values: Mapping[str, Any],
    field: str,
    default: int,
    low: int = 0,
    high: int = 1024,
) -> int:
    """``section.field`` as an integer in low..high, ``default`` when the field is absent."""
    return _int(source, f"{section}.{field}", values.get(field, default), low, high)


def _resources(source: str, path: str, value: object) -> tuple[tuple[str, int], ...]:
    if not isinstance(value, list) or not value:
        raise _fail(source, path, "expected a non-empty list of {name, weight}")
    out: list[tuple[str, int]] = []
    for i, item in enumerate(value):
        item = _mapping(source, f"{path}[{i}]", item, frozenset({"name", "weight"}))
        name = item.get("name")
        if not isinstance(name, str) or not name or name == "pods":
            raise _fail(source, f"{path}[{i}].name", f"expected a resource name, got {name!r}")
        out.append((name, _int(source, f"{path}[{i}].weight", item.get("weight", 1), 1, 100)))
    return tuple(out)


def parse_profile(document: object, source: str) -> SchedulerProfile:
    """Validate a profile document; missing sections take the shipped defaults."""
    base = default_profile() if source != _DEFAULT_SOURCE else None
    top = _mapping(source, "", document, _TOP_LEVEL)
    kind = top.get("kind", "SchedulerProfile")
    if kind != "SchedulerProfile":
        raise _fail(source, "kind", f"expected SchedulerProfile, got {kind!r}")
    weights = dict(base.weights) if base else {}
    scores = top.get("scores")
    names = frozenset(base.weights if base else scores if isinstance(scores, Mapping) else ())
    for plugin, weight in _mapping(source, "scores", scores, names).items():
        weights[plugin] = _int(source, f"scores.{plugin}", weight, 0, 100)
    fit = _mapping(
        source,
        "nodeResourcesFit",
        top.get("nodeResourcesFit"),
        frozenset({"strategy", "resources"}),
    )
    strategy = fit.get("strategy", base.fit_strategy if base else "LeastAllocated")
    if strategy not in FIT_STRATEGIES:
        raise _fail(
            source,
            "nodeResourcesFit.strategy",
            f"expected one of {list(FIT_STRATEGIES)}, got {strategy!r}",
        )
    fit_resources = (
        _resources(source, "nodeResourcesFit.resources", fit["resources"])
        if "resources" in fit
        else (base.fit_resources if base else (("cpu", 1), ("memory", 1)))
    )
    balanced = _mapping(
        source,
        "nodeResourcesBalancedAllocation",
        top.get("nodeResourcesBalancedAllocation"),
        frozenset({"resources"}),
    )
    balanced_resources = (
        _resources(source, "nodeResourcesBalancedAllocation.resources", balanced["resources"])
        if "resources" in balanced
        else (base.balanced_resources if base else (("cpu", 1), ("memory", 1)))
    )
    inter_pod = _mapping(
        source,
        "interPodAffinity",
        top.get("interPodAffinity"),
        frozenset({"hardPodAffinityWeight"}),
    )
    hard_weight = _field_int(
        source,
        "interPodAffinity",
        inter_pod,
        "hardPodAffinityWeight",
        base.hard_pod_affinity_weight if base else 1,
        0,
        100,
    )
    reservation = _mapping(
        source, "reservation", top.get("reservation"), frozenset({"minGpus", "ttlSeconds"})
    )
    min_gpus = _field_int(
        source, "reservation", reservation, "minGpus", base.reservation_min_gpus if base else 8
    )
    ttl_s = _field_int(
        source,
        "reservation",
        reservation,
        "ttlSeconds",
        base.reservation_ttl_s if base else 300,
        1,
        86400,
    )
    headroom = _mapping(source, "headroom", top.get("headroom"), frozenset({"minGpus"}))
    headroom_min_gpus = _field_int(
        source, "headroom", headroom, "minGpus", base.headroom_min_gpus if base else 8
    )
    return SchedulerProfile(
        weights=weights,
        fit_strategy=str(strategy),
        fit_resources=fit_resources,
        balanced_resources=balanced_resources,
        hard_pod_affinity_weight=hard_weight,
        reservation_min_gpus=min_gpus,
        reservation_ttl_s=ttl_s,
        headroom_min_gpus=headroom_min_gpus,
    )


_DEFAULT_SOURCE = "scheduler/profiles/default.yaml"


@cache
def default_profile() -> SchedulerProfile:
    text = resources.files("gputopo.scheduler").joinpath("profiles/default.yaml").read_text()
    return parse_profile(yaml.safe_load(text), _DEFAULT_SOURCE)


def load_profile(path: str | Path) -> SchedulerProfile:
    """Load and validate a user profile file."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise SchedulerInputError(f"profile {path}: cannot read: {exc.strerror}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SchedulerInputError(f"profile {path}: not valid YAML: {_yaml_problem(exc)}") from None
    return parse_profile(document, str(path))


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is not None:
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return str(problem)
