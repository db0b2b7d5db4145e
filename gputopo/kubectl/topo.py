"""``kubectl gputopo topo NODE``: a Node's topology annotation, drawn like ``discover -o text``.

The annotation is read with the contract's schema (:func:`parse_topology_annotation`) and turned
into the agent's model (:func:`~gputopo.agent.annotation.topology_from_annotation`), so the one
renderer draws both. What the annotation does not carry (driver versions, NVLink link counts,
PCIe link speeds, counters) shows as unknown.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gputopo.agent.annotation import topology_from_annotation
from gputopo.agent.render import render_text
from gputopo.core.cli import EXIT_FAILURE, CliError
from gputopo.core.contract import (
    DEFAULT_CONTRACT,
    Contract,
    ContractError,
    parse_topology_annotation,
)


def node_topology_text(node: Mapping[str, Any], contract: Contract = DEFAULT_CONTRACT) -> str:
    """The drawing of one Node object's annotation; CliError (one line naming the node and the
    annotation) when it has none or one this build cannot read."""
    metadata = node.get("metadata") or {}
    name = str(metadata.get("name", ""))
    key = contract.topology_annotation
    text = (metadata.get("annotations") or {}).get(key)
    if not text:
        raise CliError(
            f"node {name!r} has no {key} annotation (is the gputopo agent running on it?)",
            EXIT_FAILURE,
        )
    try:
        annotation = parse_topology_annotation(text)
        topology = topology_from_annotation(annotation, name)
    except (ContractError, ValueError) as error:
        raise CliError(f"node {name!r}: annotation {key}: {error}", EXIT_FAILURE) from None
    return render_text(topology)
