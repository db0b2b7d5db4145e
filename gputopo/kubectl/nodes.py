"""``kubectl gputopo nodes``: one row per GPU node, its free GPUs counted by the scheduler.

A GPU node is one the agent describes: it carries the topology annotation or the
``gpu.present=true`` label. Free GPUs come from the scheduler's own bookkeeping: the Nodes and
their running pods go into a :class:`~gputopo.scheduler.snapshot.ClusterSnapshot`, and its
:class:`~gputopo.scheduler.gpu_alloc.GpuAllocator` says which GPUs each pod holds, exactly as
a scheduling cycle would see them (the layout from the annotation, else from the labels; a
failed GPU is never free). NodeResourceTopology is not read: what pods the scheduler does not
know hold is not counted here.

Taints that matter are the ones that keep pods off: NoSchedule and NoExecute taints, and the
agent's own (its SLA taint is PreferNoSchedule by default).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from gputopo.core.contract import (
    DEFAULT_CONTRACT,
    TRUE,
    Contract,
    ContractError,
    parse_sla,
    parse_topology_annotation,
)
from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.gpu_alloc import GpuAllocator
from gputopo.scheduler.model import NO_EXECUTE, NO_SCHEDULE, Taint
from gputopo.scheduler.snapshot import ClusterSnapshot

NONE = "<none>"  # kubectl's word for an empty cell
UNKNOWN = "<unknown>"
PCIE_DOMAIN = "pcie"  # GPUs without NVLink peers, each a domain of its own, shown together


@dataclass(frozen=True)
class DomainFree:
    """Free and healthy GPUs of one NVLink domain (``domain`` None: GPUs without NVLink)."""

    domain: int | None
    free: tuple[int, ...]
    gpus: tuple[int, ...]

    @property
    def label(self) -> str:
        return PCIE_DOMAIN if self.domain is None else f"nvl{self.domain}"


@dataclass(frozen=True)
class GpuNodeRow:
    """What the table says of one node."""

    name: str
    model: str | None
    gpus: int
    free: int | None  # None: the scheduler sees no GPU layout on this node
    domains: tuple[DomainFree, ...] = ()
    mig_free: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # resource: free, all
    interconnect: str | None = None
    health: str | None = None
    healthy: int | None = None
    sla: int | None = None
    taints: tuple[str, ...] = ()
    layout: str = "none"  # annotation | labels | none
    annotation_error: str | None = None


def is_gpu_node(node: Mapping[str, Any], contract: Contract = DEFAULT_CONTRACT) -> bool:
    metadata = node.get("metadata") or {}
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}
    return contract.topology_annotation in annotations or labels.get(contract.gpu_present) == TRUE


def _taint_text(taint: Taint) -> str:
    value = f"={taint.value}" if taint.value else ""
    return f"{taint.key}{value}:{taint.effect}"


def _matters(taint: Taint, contract: Contract) -> bool:
    return taint.effect in (NO_SCHEDULE, NO_EXECUTE) or taint.key in contract.taint_keys()


def gpu_node_rows(
    nodes: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    *,
    contract: Contract = DEFAULT_CONTRACT,
    notes: list[str] | None = None,
) -> list[GpuNodeRow]:
    """Rows for the GPU nodes among ``nodes``, sorted by name; ``pods`` are the running pods
    (those bound elsewhere or to no node are ignored). An object the scheduler cannot read is
    left out with a line in ``notes``, as the running scheduler leaves it out."""
    notes = notes if notes is not None else []
    snapshot = ClusterSnapshot()
    for obj in nodes:
        if not is_gpu_node(obj, contract):
            continue
        try:
            snapshot.add_node(obj)
        except SchedulerInputError as error:
            notes.append(f"{error}; node skipped")
    for obj in pods:
        node_name = (obj.get("spec") or {}).get("nodeName")
        if not node_name or snapshot.slot_of(node_name) is None:
            continue
        try:
            snapshot.add_pod(obj)
        except SchedulerInputError as error:
            notes.append(f"{error}; its requests are not counted")
    allocator = GpuAllocator(snapshot, contract=contract)
    rows = []
    for slot, node in snapshot.iter_nodes():
        state = allocator.state(slot)
        annotation_error = None
        annotated_gpus: int | None = None
        annotated_model: str | None = None
        text = node.annotations.get(contract.topology_annotation)
        if text:
            try:
                annotation = parse_topology_annotation(text)
            except ContractError as error:
                annotation_error = str(error)
            else:
                annotated_gpus = len(annotation.gpus)
                annotated_model = next((g.model for g in annotation.gpus if g.model), None)
        domains: list[DomainFree] = []
        mig_free: dict[str, tuple[int, int]] = {}
        free: int | None = None
        if state is not None:
            free_indices = {gpu.index for gpu in state.free_gpus()}
            free = len(free_indices)
            grouped: dict[int | None, list[int]] = {}
            for gpu in state.layout.gpus:
                if gpu.healthy:
                    grouped.setdefault(gpu.nvlink_domain, []).append(gpu.index)
            for domain in sorted(grouped, key=lambda d: (d is None, d or 0)):
                indices = tuple(grouped[domain])
                domains.append(
                    DomainFree(domain, tuple(i for i in indices if i in free_indices), indices)
                )
            for mig in state.layout.migs:
                unheld, total = mig_free.get(mig.resource, (0, 0))
                held = mig.key in state.mig_owner
                mig_free[mig.resource] = (unheld + (0 if held else 1), total + 1)
        gpus = annotated_gpus
        if gpus is None:
            gpus = len(state.layout.gpus) if state is not None else 0
        rows.append(
            GpuNodeRow(
                name=node.name,
                model=node.labels.get(contract.gpu_model)
                or annotated_model
                or node.labels.get("nvidia.com/gpu.product"),
                gpus=gpus,
                free=free,
                domains=tuple(domains),
                mig_free=dict(sorted(mig_free.items())),
                interconnect=node.labels.get(contract.gpu_interconnect),
                health=node.labels.get(contract.gpu_health),
                healthy=_int_label(node.labels, contract.gpu_healthy),
                sla=parse_sla(node.labels.get(contract.sla)),
                taints=tuple(_taint_text(t) for t in node.taints if _matters(t, contract)),
                layout=state.layout.source if state is not None else "none",
                annotation_error=annotation_error,
            )
        )
    return sorted(rows, key=lambda row: row.name)


def _int_label(labels: Mapping[str, str], key: str) -> int | None:
    value = labels.get(key)
    return int(value) if value is not None and value.isdigit() else None


# --- output --------------------------------------------------------------------------------


def domains_cell(row: GpuNodeRow) -> str:
    """``nvl0:3/4 nvl1:4/4``: free of healthy GPUs per NVLink domain; ``pcie`` for the rest."""
    if row.free is None:
        return UNKNOWN
    if not row.domains:
        return NONE
    return " ".join(f"{d.label}:{len(d.free)}/{len(d.gpus)}" for d in row.domains)


def _cell(value: object) -> str:
    return UNKNOWN if value is None else str(value)


def _mig_cell(row: GpuNodeRow) -> str:
    if not row.mig_free:
        return NONE
    return ",".join(
        f"{resource.removeprefix('nvidia.com/')}:{free}/{total}"
        for resource, (free, total) in row.mig_free.items()
    )


def render_table(rows: Sequence[GpuNodeRow], *, wide: bool = False) -> str:
    """kubectl's table: upper-case headers, columns three spaces apart, ``<none>`` for empty."""
    if not rows:
        return "No GPU nodes found (none carries the gputopo agent's labels or annotation)."
    headers = ["NAME", "MODEL", "GPUS", "FREE", "FREE PER NVLINK DOMAIN", "HEALTH", "SLA"]
    if wide:
        headers += ["INTERCONNECT", "MIG FREE", "LAYOUT", "TAINTS"]
    else:
        headers += ["TAINTS"]
    table = []
    for row in rows:
        cells = [
            row.name,
            row.model or UNKNOWN,
            str(row.gpus),
            _cell(row.free),
            domains_cell(row),
            _cell(row.health),
            _cell(row.sla),
        ]
        if wide:
            cells += [_cell(row.interconnect), _mig_cell(row), row.layout]
            cells.append(",".join(row.taints) or NONE)
        else:
            cells.append(str(len(row.taints)) if row.taints else NONE)
        table.append(cells)
    widths = [max(len(line[i]) for line in [headers, *table]) for i in range(len(headers))]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [headers, *table]
    )


def row_document(row: GpuNodeRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "model": row.model,
        "gpus": row.gpus,
        "free": row.free,
        "nvlinkDomains": [
            {"domain": d.domain, "gpus": list(d.gpus), "free": list(d.free)} for d in row.domains
        ],
        "mig": {
            resource: {"free": free, "total": total}
            for resource, (free, total) in row.mig_free.items()
        },
        "interconnect": row.interconnect,
        "health": row.health,
        "healthyGpus": row.healthy,
        "sla": row.sla,
        "taints": list(row.taints),
        "layout": row.layout,
        "annotationError": row.annotation_error,
    }


def render_document(rows: Sequence[GpuNodeRow], output: str) -> str:
    document = {"nodes": [row_document(row) for row in rows]}
    if output == "json":
        return json.dumps(document, indent=2)
    return yaml.safe_dump(document, sort_keys=False).rstrip("\n")
