"""gputopo central scheduler: kube-scheduler's constraint semantics on an incremental cache.

The public surface of the core, for the runtime (list+watch, queue, binder), the extender and
`simulate`:

- `ClusterSnapshot`: the cluster cache. `add_node`/`update_node`/`remove_node`,
  `add_pod`/`update_pod`/`remove_pod` (assigned pods only), `add_namespace`/`update_namespace`/
  `remove_namespace`, `assume(pod, node)` / `forget(key)`. Accepts Kubernetes JSON dicts or parsed
  objects.
- `schedule_one(pod, snapshot, profile=None) -> ScheduleResult`: one scheduling cycle, no side
  effects. `ScheduleResult.node` (or None), `.message` (kube-style "0/N nodes are available: ..."
  when None), `.warnings`, `.reason_counts()`, `.diagnosis()` -> {node: NodeDiagnosis}.
- `parse_pod`, `parse_node`, `parse_namespace`: parse once, reuse (errors: SchedulerInputError).
- `SchedulerProfile`, `default_profile()`, `load_profile(path)`: score weights.
- `fit_error_message(num_nodes, reason_counts)`: kube-scheduler's FitError wording.

Exported lazily (PEP 562): importing a submodule, such as the CLI, does not import numpy, so
``gputopo-scheduler`` can say in one line that the ``scheduler`` extra is missing instead of
failing in this file with a traceback.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gputopo.scheduler.errors import SchedulerInputError
    from gputopo.scheduler.framework import (
        NodeDiagnosis,
        ScheduleResult,
        fit_error_message,
        reason_counts,
        schedule_one,
    )
    from gputopo.scheduler.model import Pod, parse_namespace, parse_node, parse_pod
    from gputopo.scheduler.scheduling_profile import (
        SchedulerProfile,
        default_profile,
        load_profile,
    )
    from gputopo.scheduler.snapshot import ClusterSnapshot

_EXPORTED_FROM = {
    "SchedulerInputError": "errors",
    "NodeDiagnosis": "framework",
    "ScheduleResult": "framework",
    "fit_error_message": "framework",
    "reason_counts": "framework",
    "schedule_one": "framework",
    "Pod": "model",
    "parse_namespace": "model",
    "parse_node": "model",
    "parse_pod": "model",
    "SchedulerProfile": "scheduling_profile",
    "default_profile": "scheduling_profile",
    "load_profile": "scheduling_profile",
    "ClusterSnapshot": "snapshot",
}


def __getattr__(name: str) -> object:
    module = _EXPORTED_FROM.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value: object = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "ClusterSnapshot",
    "NodeDiagnosis",
    "Pod",
    "ScheduleResult",
    "SchedulerInputError",
    "SchedulerProfile",
    "default_profile",
    "fit_error_message",
    "load_profile",
    "parse_namespace",
    "parse_node",
    "parse_pod",
    "reason_counts",
    "schedule_one",
]
