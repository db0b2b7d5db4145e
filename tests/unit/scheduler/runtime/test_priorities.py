"""Pod priorities: spec.priority first, then the PriorityClass, then the global default."""

from __future__ import annotations

from typing import Any

from gputopo.scheduler.runtime.priorities import PriorityClasses


def priority_class(name: str, value: int, global_default: bool = False) -> dict[str, Any]:
    return {"metadata": {"name": name}, "value": value, "globalDefault": global_default}


def test_spec_priority_wins_over_priority_class_name() -> None:
    classes = PriorityClasses()
    classes.upsert(priority_class("training-high", 1000))
    pod = {"spec": {"priority": 5, "priorityClassName": "training-high"}}
    assert classes.priority_of(pod) == 5


def test_priority_class_value_when_admission_did_not_fill_spec_priority() -> None:
    classes = PriorityClasses()
    classes.upsert(priority_class("training-high", 1000))
    assert classes.priority_of({"spec": {"priorityClassName": "training-high"}}) == 1000


def test_global_default_priority_class_applies_to_pods_without_one() -> None:
    classes = PriorityClasses()
    classes.upsert(priority_class("batch-default", 100, global_default=True))
    assert classes.priority_of({"spec": {}}) == 100
    classes.delete(priority_class("batch-default", 100))
    assert classes.priority_of({"spec": {}}) == 0
