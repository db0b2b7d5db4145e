"""``kubectl-gputopo``, run by kubectl as ``kubectl gputopo``: ``nodes``, ``topo NODE``,
``why POD``.

The project's CLI convention (:mod:`gputopo.core.flags`, :mod:`gputopo.core.cli`):
``--version``, ``-o/--output``, ``--kubeconfig``/``--context``, a user error is one line and
exit 2; an API error (forbidden, not found, unreachable) is one line and exit 1, as kubectl
exits. kubectl hands a plugin its arguments untouched, so ``--kubeconfig``, ``--context`` and
``-n`` are accepted before and after the subcommand alike (``kubectl gputopo -n ml why
train-0``, ``kubectl gputopo why train-0 -n ml``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Final
from urllib.parse import quote

from gputopo.core.cli import EXIT_FAILURE, CliError, run_command
from gputopo.core.flags import (
    OneLineErrorParser,
    add_kubeconfig_arguments,
    add_output_argument,
    add_version_argument,
)
from gputopo.core.logs import add_logging_arguments
from gputopo.kubectl import live, nodes, topo, why
from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.scheduling_profile import default_profile, load_profile

PROG: Final = "kubectl-gputopo"
_CONNECTION_DESTS: Final = frozenset({"kubeconfig", "context", "namespace"})
_KIND_ALIASES: Final = {"pod": ("pod", "pods", "po"), "node": ("node", "nodes", "no")}


def _connection_arguments(parser: argparse.ArgumentParser) -> None:
    add_kubeconfig_arguments(parser)
    parser.add_argument(
        "--namespace",
        "-n",
        default=None,
        metavar="NAME",
        help="the pod's namespace (default: the context's, else default)",
    )


def _common(parser: argparse.ArgumentParser) -> None:
    """The flags every subcommand takes. Given before the subcommand they are the top parser's;
    after it, the subcommand's, whose defaults are suppressed so they never undo the former."""
    _connection_arguments(parser)
    for action in parser._actions:
        if action.dest in _CONNECTION_DESTS:
            action.default = argparse.SUPPRESS
    add_logging_arguments(parser)
    # A person reads this tool's stderr: text, and only what went wrong.
    parser.set_defaults(log_format="text", log_level="warning")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog=PROG,
        description="gputopo's view of the cluster's GPU nodes (run as `kubectl gputopo`)",
    )
    add_version_argument(parser, PROG)
    _connection_arguments(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    nodes_parser = subparsers.add_parser(
        "nodes",
        help="GPU nodes: model, free GPUs per NVLink domain, health, SLA, taints",
        description=(
            "One row per node the gputopo agent describes. Free GPUs are counted by the "
            "scheduler's own bookkeeping from the Node's topology annotation and the running "
            "pods bound to it."
        ),
    )
    add_output_argument(nodes_parser, ("text", "wide", "json", "yaml"), "text")
    _common(nodes_parser)
    nodes_parser.set_defaults(handler=nodes_command)

    topo_parser = subparsers.add_parser(
        "topo",
        help="a node's topology from its annotation, drawn like `gputopo-agent discover -o text`",
    )
    topo_parser.add_argument("node", metavar="NODE", help="the Node's name (or node/NAME)")
    _common(topo_parser)
    topo_parser.set_defaults(handler=topo_command)

    why_parser = subparsers.add_parser(
        "why",
        help="why a pending pod is not placed: the scheduler's verdict on every node",
        description=(
            "Reads the live Nodes, Namespaces, PriorityClasses and running Pods, and runs "
            "`gputopo-scheduler simulate --explain` for the pod on them, now."
        ),
    )
    why_parser.add_argument("pod", metavar="POD", help="the pending Pod's name (or pod/NAME)")
    why_parser.add_argument(
        "--profile", metavar="FILE", help="scoring profile YAML (default: the shipped profile)"
    )
    why_parser.add_argument(
        "--scheduler-name",
        default=why.DEFAULT_SCHEDULER_NAME,
        help=f"gputopo's scheduler name in the cluster (default {why.DEFAULT_SCHEDULER_NAME})",
    )
    add_output_argument(why_parser, ("text", "json", "yaml"), "text")
    _common(why_parser)
    why_parser.set_defaults(handler=why_command)
    return parser


def _object_name(text: str, kind: str) -> str:
    """``train-0``, or kubectl's ``pod/train-0`` (``pods/``, ``po/`` too) for a pod."""
    prefix, slash, name = text.partition("/")
    if slash and prefix.lower() in _KIND_ALIASES[kind]:
        return name
    return text


def nodes_command(args: argparse.Namespace) -> int:
    client = live.connect(args.kubeconfig, args.context)
    notes: list[str] = []
    rows = nodes.gpu_node_rows(
        live.list_nodes(client), live.list_running_pods(client, bound_only=True), notes=notes
    )
    for note in notes:
        print(f"{PROG} nodes: {note}", file=sys.stderr)
    if args.output in ("json", "yaml"):
        print(nodes.render_document(rows, args.output))
    else:
        print(nodes.render_table(rows, wide=args.output == "wide"))
    return 0


def topo_command(args: argparse.Namespace) -> int:
    client = live.connect(args.kubeconfig, args.context)
    name = _object_name(args.node, "node")
    node = live.get(client, f"/api/v1/nodes/{quote(name, safe='')}", f"reading node {name}")
    if node is None:
        raise CliError(f'node "{name}" not found', EXIT_FAILURE)
    print(topo.node_topology_text(node), end="")
    return 0


def why_command(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile) if args.profile else default_profile()
    client = live.connect(args.kubeconfig, args.context)
    namespace = args.namespace or client.config.namespace or "default"
    explanation = why.explain(client, namespace, _object_name(args.pod, "pod"), profile)
    for note in explanation.notes:
        print(f"{PROG} why: {note}", file=sys.stderr)
    if args.output in ("json", "yaml"):
        print(why.render_document(explanation, args.output))
    else:
        print(why.render_text(explanation, args.scheduler_name))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(PROG, build_parser, argv, user_errors=(SchedulerInputError,))


if __name__ == "__main__":
    sys.exit(main())
