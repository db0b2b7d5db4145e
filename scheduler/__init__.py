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
"""

from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.framework import (
    NodeDiagnosis,
    ScheduleResult,
    fit_error_message,
    reason_counts,
    schedule_one,
)
from gputopo.scheduler.model import Pod, parse_namespace, parse_node, parse_pod
from gputopo.scheduler.scheduling_profile import SchedulerProfile, default_profile, load_profile
from gputopo.scheduler.snapshot import ClusterSnapshot

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
