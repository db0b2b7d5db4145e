"""Typed, slotted forms of the Kubernetes objects the scheduler reads.

Objects arrive as plain Kubernetes JSON dicts (camelCase keys, as from YAML or the API). They are
parsed once, here, into small structures the filters and scores read many times; malformed input
raises `SchedulerInputError` naming the object (`Pod ns/name`) and the field.

Defaulting the API server would have applied is applied here too, because simulate's input never
went through an API server: container requests default to limits, `hostNetwork` ports become host
ports, affinity `matchLabelKeys`/`mismatchLabelKeys` are merged into the label selector, and every
Namespace carries `kubernetes.io/metadata.name`.

One module per object or concern: `reader` (the field reader that names the path in every
error), `selectors`, `tolerations` (taints and tolerations), `affinity` (pod affinity and
topology spread), `pod_resources` (requests and host ports), `pod`, `node`, `namespace`,
`priority_class`. Import from here.
"""

from gputopo.scheduler.model.affinity import AffinityTerm, SpreadConstraint, WeightedAffinityTerm
from gputopo.scheduler.model.namespace import LABEL_NAMESPACE_NAME, Namespace, parse_namespace
from gputopo.scheduler.model.node import LABEL_HOSTNAME, Node, parse_node
from gputopo.scheduler.model.pod import Pod, parse_pod
from gputopo.scheduler.model.pod_resources import (
    DEFAULT_MEMORY_REQUEST,
    DEFAULT_MILLI_CPU_REQUEST,
    HostPort,
)
from gputopo.scheduler.model.priority_class import (
    BUILTIN_PRIORITY_CLASSES,
    PriorityClass,
    parse_priority_class,
)
from gputopo.scheduler.model.reader import JsonObject, parse_int64
from gputopo.scheduler.model.selectors import (
    MATCH_EVERYTHING,
    MATCH_NOTHING,
    LabelSelector,
    NodeSelectorTerm,
    Requirement,
    parse_label_selector,
)
from gputopo.scheduler.model.tolerations import (
    NO_EXECUTE,
    NO_SCHEDULE,
    PREFER_NO_SCHEDULE,
    TAINT_EFFECTS,
    TAINT_NODE_UNSCHEDULABLE,
    Taint,
    Toleration,
    tolerated,
)

__all__ = [
    "BUILTIN_PRIORITY_CLASSES",
    "DEFAULT_MEMORY_REQUEST",
    "DEFAULT_MILLI_CPU_REQUEST",
    "LABEL_HOSTNAME",
    "LABEL_NAMESPACE_NAME",
    "MATCH_EVERYTHING",
    "MATCH_NOTHING",
    "NO_EXECUTE",
    "NO_SCHEDULE",
    "PREFER_NO_SCHEDULE",
    "TAINT_EFFECTS",
    "TAINT_NODE_UNSCHEDULABLE",
    "AffinityTerm",
    "HostPort",
    "JsonObject",
    "LabelSelector",
    "Namespace",
    "Node",
    "NodeSelectorTerm",
    "Pod",
    "PriorityClass",
    "Requirement",
    "SpreadConstraint",
    "Taint",
    "Toleration",
    "WeightedAffinityTerm",
    "parse_int64",
    "parse_label_selector",
    "parse_namespace",
    "parse_node",
    "parse_pod",
    "parse_priority_class",
    "tolerated",
]
