"""`gputopo-scheduler`: one argparse subcommand per `add_*_parser` function.

Each subcommand registers itself with `parser.set_defaults(handler=...)`; the handler returns
the exit status. User errors (bad input files, bad profile) print one line on stderr,
`gputopo-scheduler: error: ...`, and exit 2, never a traceback. The convention — `--version`,
`-o/--output`, `--log-format`, `--kubeconfig`/`--context`, the one-line errors — is the agent's
too (`gputopo.core.cli`, `gputopo.core.flags`).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Sequence
from typing import Any

from gputopo.core.cli import EXIT_FAILURE, error_line, run_command
from gputopo.core.flags import OneLineErrorParser, add_output_argument, add_version_argument
from gputopo.core.logs import add_logging_arguments
from gputopo.scheduler.cli_run import add_run_parser
from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.scheduling_profile import default_profile, load_profile

PROG = "gputopo-scheduler"
# The `scheduler` extra's modules (numpy; cel-python, imported as celpy, for DRA selectors): the
# agent's install (and image) leaves them out.
SCHEDULER_EXTRA_MODULES = (("numpy", "numpy"), ("celpy", "cel-python"))


def missing_extra() -> str | None:
    """The first distribution of the `scheduler` extra that is not installed, else None."""
    for module, distribution in SCHEDULER_EXTRA_MODULES:
        if importlib.util.find_spec(module) is None:
            return distribution
    return None


def missing_extra_message(distribution: str) -> str:
    return (
        f"{distribution} is not installed: the scheduler needs the `scheduler` extra "
        "(pip install 'gputopo[scheduler]', or the scheduler image)"
    )


def add_simulate_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "simulate",
        help="place pods from plain Kubernetes YAML offline and explain each decision",
        description=(
            "Read Nodes, Namespaces, PriorityClasses and Pods (multi-document YAML or v1 List). "
            "Pods with spec.nodeName are existing load; the others are placed in file order, "
            "each placement counting as load for the next."
        ),
    )
    parser.add_argument(
        "--cluster",
        action="append",
        required=True,
        metavar="FILE",
        help="Kubernetes YAML to read (repeatable; read in the order given)",
    )
    parser.add_argument(
        "--profile", metavar="FILE", help="scoring profile YAML (default: the shipped profile)"
    )
    parser.add_argument(
        "--explain", action="store_true", help="include every node's verdict, reasons and score"
    )
    add_output_argument(parser, ("json", "text"), "text")
    add_logging_arguments(parser)
    parser.set_defaults(handler=simulate_command)


def simulate_command(args: argparse.Namespace) -> int:
    from gputopo.scheduler.simulate import load_cluster, render_json, render_text, simulate

    profile = load_profile(args.profile) if args.profile else default_profile()
    cluster = load_cluster(args.cluster)
    for note in cluster.notes:
        print(f"{PROG} simulate: {note}", file=sys.stderr)
    _, results = simulate(cluster, profile, explain=args.explain)
    if args.output == "json":
        print(render_json(results, args.explain))
    else:
        print(render_text(cluster, results, args.explain))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from gputopo.scheduler.cli_extender import add_extender_parser
    from gputopo.scheduler.cli_rebalance import add_rebalance_parser
    from gputopo.scheduler.cli_topology import add_topology_parser

    parser = OneLineErrorParser(prog=PROG, description="gputopo's topology-aware scheduler")
    add_version_argument(parser, PROG)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_simulate_parser(subparsers)
    add_run_parser(subparsers)
    add_extender_parser(subparsers)
    add_topology_parser(subparsers)
    add_rebalance_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # numpy's OpenBLAS starts a worker thread per core when imported (below, not before), which
    # spins for a second or two: about 0.1 CPU s per start on two cores. The scheduler makes no
    # BLAS call (docs/performance.md), so one thread; a value set outside is kept.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    missing = missing_extra()
    if missing is not None:
        print(error_line(PROG, missing_extra_message(missing)), file=sys.stderr)
        return EXIT_FAILURE
    return run_command(PROG, build_parser, argv, user_errors=(SchedulerInputError,))


if __name__ == "__main__":
    sys.exit(main())
