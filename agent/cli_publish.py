"""``gputopo-agent labels`` and ``gputopo-agent run``: what would be published, and publishing it.

``labels`` prints exactly what ``run`` would leave on a Node that carries none of it yet —
labels, taints and annotations, ownership bookkeeping included — without a cluster.
``run --once`` does one discovery + publish cycle (:func:`agent.publish.cycle.run_cycle`);
without ``--once`` it hands over to the long-running loop in :mod:`agent.runloop`
(interval with jitter, health poll, XID watcher, udev hotplug, metrics, signals).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

from gputopo.agent.publish.calls import PublishResult
from gputopo.agent.publish.cycle import CycleResult, run_cycle
from gputopo.agent.publish.desired import PublishOptions, desired_state
from gputopo.agent.publish.plan import fresh_node_publication
from gputopo.agent.publish.writer import Publisher
from gputopo.agent.topology import NodeTopology
from gputopo.core.contract import DEFAULT_PREFIX, MIG_STRATEGIES, TAINT_EFFECTS, Contract
from gputopo.core.validate import ValidationError, ValidationGate, is_qualified_name

if TYPE_CHECKING:
    from gputopo.core.kube import KubeClient

log = logging.getLogger(__name__)


def _cli() -> ModuleType:
    """``agent.cli``, imported late: it imports this module to register the subcommands."""
    import gputopo.agent.cli

    return gputopo.agent.cli


def add_publish_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mig-strategy",
        choices=MIG_STRATEGIES,
        default="none",
        help="GFD MIG labelling strategy (default none)",
    )
    parser.add_argument(
        "--sla-taint-effect",
        choices=TAINT_EFFECTS,
        default="PreferNoSchedule",
        help="effect of the <prefix>/sla taint (default PreferNoSchedule)",
    )
    parser.add_argument(
        "--health-taint-effect",
        choices=TAINT_EFFECTS,
        default="NoSchedule",
        help="effect of the <prefix>/gpu-health taint (default NoSchedule)",
    )
    parser.add_argument(
        "--prefix",
        default=DEFAULT_PREFIX,
        help=f"prefix of gputopo's own keys (default {DEFAULT_PREFIX})",
    )


def publish_options(args: argparse.Namespace) -> PublishOptions:
    if not is_qualified_name(f"{args.prefix}/x") or "/" in args.prefix:
        raise _cli().CliError(f"--prefix {args.prefix!r}: not a DNS subdomain like gputopo.io")
    return PublishOptions(
        contract=Contract(prefix=args.prefix),
        mig_strategy=args.mig_strategy,
        sla_taint_effect=args.sla_taint_effect,
        health_taint_effect=args.health_taint_effect,
    )


# -- labels ---------------------------------------------------------------------------------------


def add_labels_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "labels",
        help="print the labels, taints and annotations this node would get",
        description="Discover this node and print exactly what `run` would publish on a Node "
        "that has none of it yet. Talks to no cluster.",
    )
    _cli().add_machine_arguments(parser)
    add_publish_arguments(parser)
    parser.add_argument("--output", "-o", choices=("json",), default="json")
    parser.set_defaults(handler=run_labels)


def run_labels(args: argparse.Namespace) -> int:
    options = publish_options(args)
    with _cli().machine_source(args) as source:
        topology = _cli().discover_topology(source)
    try:
        document = labels_document(topology, options)
    except ValidationError as error:
        raise _cli().CliError(str(error), _cli().EXIT_FAILURE) from None
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return 0


def labels_document(topology: NodeTopology, options: PublishOptions) -> dict[str, Any]:
    """``{"labels", "taints", "annotations"}``: what ``run`` leaves on a Node that had none."""
    desired = desired_state(topology, options, ValidationGate())
    labels, taints, annotations = fresh_node_publication(desired, options.contract)
    return {"labels": labels, "taints": taints, "annotations": annotations}


# -- run ------------------------------------------------------------------------------------------


def add_run_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="discover and publish labels, taints and annotations to this node",
        description="Discover this node and publish to its Node object (and optionally its "
        "NodeResourceTopology). Writes only what changed and only keys it owns.",
    )
    _cli().add_machine_arguments(parser)
    add_publish_arguments(parser)
    parser.add_argument("--once", action="store_true", help="one cycle, then exit")
    parser.add_argument(
        "--interval",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="seconds between cycles without --once (default 60)",
    )
    parser.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig (default: in-cluster)")
    parser.add_argument(
        "--context",
        metavar="NAME",
        help="kubeconfig context (default: its current-context; ignored in-cluster)",
    )
    parser.add_argument("--publish-nrt", action="store_true", help="also apply the NRT object")
    parser.add_argument("--dry-run", action="store_true", help="print the diff, write nothing")
    parser.add_argument("--prune", action="store_true", help="remove everything gputopo owns")
    from gputopo.agent.runloop import add_arguments as add_runloop_arguments

    add_runloop_arguments(parser)
    parser.set_defaults(handler=run_run)


def _api_client(kubeconfig: str | None, context: str | None = None) -> KubeClient:
    """The agent's own small REST client (:mod:`gputopo.core.kube`), not the ``kubernetes``
    package: importing that costs about 30 MiB on every node."""
    from gputopo.core.kube import KubeConfigError, client_from_config

    try:
        return client_from_config(kubeconfig, context=context)
    except KubeConfigError as error:
        if kubeconfig:
            raise _cli().CliError(f"--kubeconfig {kubeconfig!r}: {error.detail}") from None
        raise _cli().CliError(str(error)) from None


def _print_result(what: str, result: PublishResult | None) -> None:
    if result is None:
        return
    for change in result.changes:
        print(change.describe())
    line = f"{what}: {result.status}"
    if result.message:
        line += f" ({result.message})"
    print(line)


def run_run(args: argparse.Namespace) -> int:
    options = publish_options(args)
    node_name = args.node_name or os.environ.get("NODE_NAME")
    if not node_name:
        raise _cli().CliError("no node to publish to: pass --node-name or set NODE_NAME")
    if args.interval <= 0:
        raise _cli().CliError(f"--interval {args.interval}: must be positive")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from gputopo.agent.publish.nrt import NrtPublisher

    api = _api_client(args.kubeconfig, args.context)
    publisher = Publisher(api, node_name, options)
    nrt = NrtPublisher(api, node_name) if args.publish_nrt else None

    if args.prune:
        result = publisher.prune(dry_run=args.dry_run)
        _print_result(f"Node {node_name}", result)
        nrt_result = nrt.prune(dry_run=args.dry_run) if nrt is not None else None
        _print_result(f"NodeResourceTopology {node_name}", nrt_result)
        return 0 if CycleResult(result, nrt_result).ok else _cli().EXIT_FAILURE

    with _cli().machine_source(args) as source:
        if not args.once:
            from gputopo.agent.runloop import run_agent

            return run_agent(source.discoverer, publisher, args, nrt=nrt)
        cycle = run_cycle(
            lambda: _cli().discover_topology(source), publisher, nrt=nrt, dry_run=args.dry_run
        )
        _print_result(f"Node {node_name}", cycle.node)
        _print_result(f"NodeResourceTopology {node_name}", cycle.nrt)
        return 0 if cycle.ok else _cli().EXIT_FAILURE
