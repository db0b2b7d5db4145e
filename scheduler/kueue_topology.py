"""A Kueue `Topology` whose levels are the topology labels the cluster's GPU nodes carry.

Kueue's Topology Aware Scheduling (TAS) needs its levels written by hand, broadest first, with
`kubernetes.io/hostname` last. This module reads them from the nodes instead:

- Candidate keys: the well-known datacenter topology labels in `KNOWN_LEVEL_KEYS` (NVIDIA's NVLink
  clique from GPU Feature Discovery or gputopo's agent, AWS's and Google Cloud's network
  topology labels, the common rack/block spellings) plus any the user names (`--level`).
- A key is a level when at least one considered node carries it. Levels are ordered by how many
  distinct values they have (fewer first: broader), and each level must nest in the one above
  it: all nodes with one value of the finer key share one value of the broader key. A key that
  does not nest is left out, with a note saying which value straddles two domains, because Kueue
  needs a tree.
- `kubernetes.io/hostname` is always the last level.
- Nodes missing a level's label are named in a note: Kueue's TAS cannot place pods on them by
  topology (they are not in the tree).

Considered nodes: those with a GPU (`nvidia.com/gpu` allocatable, or a `nvidia.com/mig-*`
resource), or every node with `all_nodes`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from gputopo.core.contract import Gfd
from gputopo.core.validate import is_qualified_name
from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.model import LABEL_HOSTNAME, Node

KUEUE_API_VERSION: Final = "kueue.x-k8s.io/v1beta2"
MAX_LEVELS: Final = 16  # the Topology CRD's maxItems

# Broad to narrow within each family; the order among families comes from the data.
KNOWN_LEVEL_KEYS: Final = (
    "topology.k8s.aws/network-node-layer-1",
    "topology.k8s.aws/network-node-layer-2",
    "topology.k8s.aws/network-node-layer-3",
    "cloud.google.com/gce-topology-block",
    "cloud.google.com/gce-topology-subblock",
    "topology.kubernetes.io/block",
    "topology.kubernetes.io/rack",
    Gfd.GPU_CLIQUE,
)


@dataclass(frozen=True)
class TopologyExport:
    """The Topology object, its levels, and what the user should know about them."""

    name: str
    levels: tuple[str, ...]
    notes: tuple[str, ...] = ()
    nodes: int = 0
    missing: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def to_object(self) -> dict[str, Any]:
        return {
            "apiVersion": KUEUE_API_VERSION,
            "kind": "Topology",
            "metadata": {
                "name": self.name,
                "labels": {"app.kubernetes.io/managed-by": "gputopo-scheduler"},
            },
            "spec": {"levels": [{"nodeLabel": level} for level in self.levels]},
        }


def has_gpu(node: Node) -> bool:
    return any(
        amount > 0 and (name == "nvidia.com/gpu" or name.startswith("nvidia.com/mig-"))
        for name, amount in node.allocatable.items()
    )


def export_topology(
    nodes: Iterable[Node],
    name: str = "gputopo",
    extra_keys: Sequence[str] = (),
    all_nodes: bool = False,
) -> TopologyExport:
    """The Topology for ``nodes``; raises SchedulerInputError for a bad key or no node."""
    for key in extra_keys:
        if not is_qualified_name(key) or key == LABEL_HOSTNAME:
            raise SchedulerInputError(
                f"--level {key!r}: expected a node label key other than {LABEL_HOSTNAME} "
                "(always the last level)"
            )
    considered = sorted(
        (node for node in nodes if all_nodes or has_gpu(node)), key=lambda node: node.name
    )
    if not considered:
        what = "nodes" if all_nodes else "GPU nodes (nvidia.com/gpu or MIG resources allocatable)"
        raise SchedulerInputError(f"no {what} to build a topology from")
    candidates = list(dict.fromkeys([*KNOWN_LEVEL_KEYS, *extra_keys]))
    values = {
        key: {node.name: node.labels[key] for node in considered if key in node.labels}
        for key in candidates
    }
    present = [key for key in candidates if values[key]]
    # Broadest first: fewer distinct values; ties keep the candidate order.
    present.sort(key=lambda key: len(set(values[key].values())))
    notes: list[str] = []
    levels: list[str] = []
    for key in present:
        straddle = _straddle(values, levels, key)
        if straddle is not None:
            notes.append(f"label {key} left out: {straddle} (Kueue's levels must nest)")
            continue
        levels.append(key)
    if len(levels) + 1 > MAX_LEVELS:
        notes.append(f"{len(levels) + 1 - MAX_LEVELS} narrowest level(s) left out (Kueue: 16 max)")
        levels = levels[: MAX_LEVELS - 1]
    levels.append(LABEL_HOSTNAME)
    missing: dict[str, tuple[str, ...]] = {}
    for key in levels[:-1]:
        lacking = tuple(node.name for node in considered if key not in node.labels)
        if lacking:
            missing[key] = lacking
            shown = ", ".join(lacking[:10]) + (", ..." if len(lacking) > 10 else "")
            notes.append(
                f"level {key}: {len(lacking)} of {len(considered)} nodes lack it ({shown}); "
                "Kueue's topology-aware scheduling leaves them out"
            )
    if len(levels) == 1:
        notes.append(
            "no topology label found on the nodes (looked for: "
            + ", ".join(candidates)
            + "): the only level is kubernetes.io/hostname"
        )
    return TopologyExport(name, tuple(levels), tuple(notes), len(considered), missing)


def _straddle(
    values: Mapping[str, Mapping[str, str]], levels: Sequence[str], key: str
) -> str | None:
    """Why ``key`` does not nest in every level already chosen, or None when it does."""
    for broader in levels:
        seen: dict[str, tuple[str, str]] = {}  # value of key -> (broader value, a node)
        for node, value in sorted(values[key].items()):
            outer = values[broader].get(node)
            if outer is None:
                continue
            first = seen.setdefault(value, (outer, node))
            if first[0] != outer:
                return (
                    f"{key}={value} spans {broader}={first[0]} (node {first[1]}) and "
                    f"{broader}={outer} (node {node})"
                )
    return None
