"""`gputopo-scheduler topology --kueue`: write a Kueue Topology from the nodes' labels.

Offline on plain YAML (`--cluster FILE`, read as `simulate` reads it) or, without `--cluster`,
from the live cluster's Nodes. The Topology goes to stdout; what the user should know (levels
left out, nodes lacking a level) to stderr, one line each.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import Any

import yaml

from gputopo.core.flags import add_kubeconfig_arguments, add_output_argument
from gputopo.core.kube.errors import KubeApiError
from gputopo.core.logs import add_logging_arguments
from gputopo.core.validate import is_dns_subdomain
from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.kueue_topology import export_topology
from gputopo.scheduler.model import Node, parse_node

PROG = "gputopo-scheduler topology"
_PAGE = 500


def add_topology_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "topology",
        help="write a Kueue Topology whose levels are the topology labels the GPU nodes carry",
        description=(
            "Build a Kueue Topology (kueue.x-k8s.io/v1beta2) for topology-aware scheduling: its "
            "levels are the known topology labels present on the GPU nodes (NVLink clique, "
            "rack, block, cloud network layers, and any --level), broadest first, each nested "
            "in the one above, then kubernetes.io/hostname. Nodes lacking a level are named on "
            "stderr."
        ),
    )
    parser.add_argument(
        "--kueue",
        action="store_true",
        required=True,
        help="write Kueue's Topology (the only format for now; say it so scripts stay valid)",
    )
    parser.add_argument(
        "--cluster",
        action="append",
        metavar="FILE",
        help="Kubernetes YAML with Nodes (repeatable); without it, the live cluster's Nodes",
    )
    parser.add_argument("--name", default="gputopo", help="the Topology's name (default gputopo)")
    parser.add_argument(
        "--level",
        action="append",
        default=[],
        metavar="LABEL",
        help="another node label to consider as a level (repeatable)",
    )
    parser.add_argument(
        "--all-nodes",
        action="store_true",
        help="consider every node, not only those with nvidia.com/gpu or MIG resources",
    )
    add_kubeconfig_arguments(parser)
    add_output_argument(parser, ("yaml", "json"), "yaml")
    add_logging_arguments(parser)
    parser.set_defaults(handler=topology_command)


def topology_command(args: argparse.Namespace) -> int:
    if not is_dns_subdomain(args.name):
        raise SchedulerInputError(f"--name {args.name!r}: expected a DNS subdomain")
    nodes = _file_nodes(args.cluster) if args.cluster else list(_live_nodes(args))
    export = export_topology(nodes, args.name, args.level, args.all_nodes)
    for note in export.notes:
        print(f"{PROG}: {note}", file=sys.stderr)
    document = export.to_object()
    if args.output == "json":
        print(json.dumps(document, indent=2))
    else:
        print(yaml.safe_dump(document, sort_keys=False), end="")
    return 0


def _file_nodes(paths: list[str]) -> list[Node]:
    from gputopo.scheduler.simulate import load_cluster

    return load_cluster(paths).nodes


def _live_nodes(args: argparse.Namespace) -> Iterator[Node]:
    from gputopo.scheduler.runtime.kube import load_kube_api

    try:
        api = load_kube_api(args.kubeconfig, context=args.context)
    except ValueError as error:
        raise SchedulerInputError(str(error)) from None
    try:
        query: dict[str, str] = {"limit": str(_PAGE)}
        while True:
            try:
                page = api.request("GET", "/api/v1/nodes", query=query, timeout_s=30)
            except KubeApiError as error:
                raise SchedulerInputError(f"listing Nodes: {error}") from None
            except OSError as error:
                raise SchedulerInputError(f"listing Nodes: {error}") from None
            for item in page.get("items") or []:
                yield parse_node(item)
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return
            query = {"limit": str(_PAGE), "continue": str(token)}
    finally:
        api.close()
