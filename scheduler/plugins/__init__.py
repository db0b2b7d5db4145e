"""Filters and scores, one concern per module, named and worded as kube-scheduler's plugins.

`PLUGINS` is the registry: the framework (`scheduler.framework`) runs the PreFilter, Filter and
Score of each plugin in this tuple's order, which is kube-scheduler's default filter order, so a
node reports the first filter it fails exactly as kube-scheduler would. Scores may run in any
order except that LoadAware reads GpuTopology's. A score's weight is the profile's
`scores.<plugin name>`. Adding a plugin is its module (see `plugins.context` for the interface)
and one line here.
"""

from __future__ import annotations

from typing import Final

from gputopo.scheduler.plugins import (
    balanced_allocation,
    dynamic_resources,
    gpu_topology,
    headroom,
    inter_pod_affinity,
    load_aware,
    node_affinity,
    node_name,
    node_ports,
    node_unschedulable,
    resources_fit,
    taint_toleration,
    topology_spread,
)
from gputopo.scheduler.plugins.context import Plugin

PLUGINS: Final[tuple[Plugin, ...]] = (
    node_unschedulable.PLUGIN,
    node_name.PLUGIN,
    taint_toleration.PLUGIN,
    node_affinity.PLUGIN,
    node_ports.PLUGIN,
    resources_fit.PLUGIN,
    topology_spread.PLUGIN,
    inter_pod_affinity.PLUGIN,
    dynamic_resources.PLUGIN,  # before preemption, as kube-scheduler's registry has it
    balanced_allocation.PLUGIN,
    gpu_topology.PLUGIN,
    load_aware.PLUGIN,
    headroom.PLUGIN,
)
