"""PriorityClass values, for the queue's order and preemption, as the watch last saw them."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from gputopo.scheduler.runtime.kube import JsonDict


@dataclass
class PriorityClasses:
    """PriorityClass values, for pods whose spec.priority admission has not filled in."""

    values: dict[str, int] = field(default_factory=dict)
    global_default: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def upsert(self, priority_class: JsonDict) -> None:
        name = str(priority_class["metadata"]["name"])
        value = int(priority_class.get("value") or 0)
        with self.lock:
            self.values[name] = value
            self.global_default.pop(name, None)
            if priority_class.get("globalDefault"):
                self.global_default[name] = value

    def delete(self, priority_class: JsonDict) -> None:
        name = str(priority_class["metadata"]["name"])
        with self.lock:
            self.values.pop(name, None)
            self.global_default.pop(name, None)

    def priority_of(self, pod: JsonDict) -> int:
        spec = pod.get("spec", {})
        if spec.get("priority") is not None:
            return int(spec["priority"])
        with self.lock:
            class_name = spec.get("priorityClassName")
            if class_name and class_name in self.values:
                return self.values[class_name]
            return max(self.global_default.values(), default=0)
