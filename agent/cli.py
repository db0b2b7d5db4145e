"""``gputopo-agent``: the node agent's command line.

Each subcommand lives in its own ``add_<name>_parser(subparsers)`` function that registers its
arguments and sets ``handler``; :data:`SUBCOMMANDS` lists them, so adding a subcommand is adding
one function and one list entry. This module is the top of the agent's CLI: it imports the
subcommand modules (:mod:`agent.cli_publish`) and the machine source they share
(:mod:`agent.cli_machine`); nothing imports it back. The convention both deployables share —
``--version``, ``-o/--output``, ``--log-format``, one-line errors with exit status 2 — comes from
:mod:`gputopo.core.cli` and :mod:`gputopo.core.flags`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from gputopo.agent.cli_machine import (
    MachineSource,
    add_machine_arguments,
    discover_topology,
    machine_source,
)
from gputopo.agent.cli_publish import add_labels_parser, add_run_parser
from gputopo.agent.render import render_text
from gputopo.agent.topology import NodeTopology
from gputopo.core.cli import EXIT_FAILURE, CliError, run_command
from gputopo.core.flags import (
    EXIT_USAGE,
    OneLineErrorParser,
    add_output_argument,
    add_version_argument,
)
from gputopo.core.logs import add_logging_arguments

PROG = "gputopo-agent"

__all__ = [
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "PROG",
    "SUBCOMMANDS",
    "CliError",
    "MachineSource",
    "build_parser",
    "discover_topology",
    "machine_source",
    "main",
]

Subparsers = Any  # argparse._SubParsersAction is private; typed loosely on purpose.


# -- discover -------------------------------------------------------------------------------------


def add_discover_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "discover",
        help="describe this node's GPUs, NVLink domains, NUMA layout and NICs",
        description="Discover the node topology from NVML and sysfs and print it.",
    )
    add_machine_arguments(parser)
    add_output_argument(parser, ("json", "yaml", "text"), "json")
    add_logging_arguments(parser)
    parser.set_defaults(handler=run_discover)


def format_topology(topology: NodeTopology, output: str) -> str:
    if output == "json":
        return topology.to_json(indent=2) + "\n"
    if output == "yaml":
        text: str = yaml.safe_dump(topology.to_dict(), sort_keys=False)
        return text
    return render_text(topology)


def run_discover(args: argparse.Namespace) -> int:
    with machine_source(args) as source:
        topology = discover_topology(source)
    sys.stdout.write(format_topology(topology, args.output))
    return 0


# -- record ---------------------------------------------------------------------------------------


def add_record_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "record",
        help="write this machine as a mock profile (for the demo and the tests)",
        description="Discover this machine and write it as a mock machine profile "
        "(YAML, or JSON when FILE ends in .json).",
    )
    parser.add_argument("--output", "-o", required=True, metavar="FILE", help="profile to write")
    add_machine_arguments(parser)
    add_logging_arguments(parser)
    parser.set_defaults(handler=run_record)


def run_record(args: argparse.Namespace) -> int:
    from gputopo.agent.record import dump_profile, profile_from_topology

    with machine_source(args) as source:
        topology = discover_topology(source)
    profile = profile_from_topology(topology)
    path = Path(args.output)
    json_wanted = path.suffix == ".json"
    text = json.dumps(profile, indent=2) + "\n" if json_wanted else dump_profile(profile)
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        message = f"--output {args.output!r}: {error.strerror or error}"
        raise CliError(message, EXIT_FAILURE) from None
    print(f"recorded {len(topology.gpus)} GPU(s) of {topology.node.hostname} to {path}")
    return 0


# -- entry point ----------------------------------------------------------------------------------

SUBCOMMANDS: list[Callable[[Subparsers], None]] = [
    add_discover_parser,
    add_record_parser,
    add_labels_parser,
    add_run_parser,
]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog=PROG, description="gputopo node agent: GPU topology discovery and publishing."
    )
    add_version_argument(parser, PROG)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_parser in SUBCOMMANDS:
        add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(PROG, build_parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
