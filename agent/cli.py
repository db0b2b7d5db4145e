"""``gputopo-agent``: the node agent's command line.

Each subcommand lives in its own ``add_<name>_parser(subparsers)`` function that registers its
arguments and sets ``handler``; :data:`SUBCOMMANDS` lists them, so adding a subcommand is adding
one function and one list entry. Handlers return the exit status. User errors (a bad profile, a
wrong sysfs root, an unwritable file) raise :class:`CliError` and become one line on stderr and
a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml

from gputopo.agent.cli_publish import add_labels_parser, add_run_parser
from gputopo.agent.discovery import Discoverer
from gputopo.agent.render import render_text
from gputopo.agent.sysfs import SysfsReader
from gputopo.agent.topology import NodeTopology

PROG = "gputopo-agent"
EXIT_USAGE = 2
EXIT_FAILURE = 1


class CliError(Exception):
    """A user error: the message names the input; ``status`` is the exit code."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.status = status


Subparsers = Any  # argparse._SubParsersAction is private; typed loosely on purpose.


# -- shared plumbing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MachineSource:
    """Where discovery reads from: an NVML module (None = the real one) and a sysfs root.

    ``discoverer`` stays open for the life of :func:`machine_source`'s block, so a run loop
    that discovers repeatedly keeps one NVML session and its XID event registration.
    """

    nvml_module: Any
    sysfs_root: str
    hostname: str | None
    discoverer: Discoverer


def add_machine_arguments(parser: argparse.ArgumentParser) -> None:
    """--mock / --sysfs-root / --node-name, shared by every subcommand that discovers."""
    parser.add_argument(
        "--mock",
        metavar="PROFILE_OR_PATH",
        help="describe a mocked machine: a built-in profile name or a profile file",
    )
    parser.add_argument(
        "--sysfs-root",
        metavar="DIR",
        help="sysfs tree to read (default /sys; with --mock, a fake tree built from the profile)",
    )
    parser.add_argument(
        "--node-name", metavar="NAME", help="node name to report (default: the hostname)"
    )


@contextlib.contextmanager
def machine_source(args: argparse.Namespace) -> Iterator[MachineSource]:
    """Resolve --mock/--sysfs-root into a discovery source; a fake sysfs lives for the block."""
    sysfs_root: str | None = args.sysfs_root
    if sysfs_root is not None:
        _check_sysfs_root(sysfs_root)
    if args.mock is None:
        with _opened(None, sysfs_root or "/sys", args.node_name) as source:
            yield source
        return
    profile = _load_profile(args.mock)
    nvml_module = _fake_nvml(profile)
    hostname = args.node_name or _profile_hostname(profile)
    if sysfs_root is not None:
        with _opened(nvml_module, sysfs_root, hostname) as source:
            yield source
        return
    with tempfile.TemporaryDirectory(prefix="gputopo-sysfs-") as directory:
        _build_fake_sysfs(profile, args.mock, directory)
        with _opened(nvml_module, directory, hostname) as source:
            yield source


@contextlib.contextmanager
def _opened(nvml_module: Any, sysfs_root: str, hostname: str | None) -> Iterator[MachineSource]:
    with Discoverer(nvml_module, sysfs_root, hostname) as discoverer:
        yield MachineSource(nvml_module, sysfs_root, hostname, discoverer)


def _check_sysfs_root(path: str) -> None:
    if not Path(path).is_dir():
        raise CliError(f"--sysfs-root {path!r}: not a directory")
    if not SysfsReader(path).is_valid_root():
        raise CliError(f"--sysfs-root {path!r}: not a sysfs tree (no bus/pci or devices/)")


def _load_profile(name_or_path: str) -> Any:
    from gputopo.mocks.profile import ProfileError, load_profile

    try:
        return load_profile(name_or_path)
    except ProfileError as error:
        raise CliError(f"--mock {name_or_path!r}: {error}") from None
    except OSError as error:
        raise CliError(f"--mock {name_or_path!r}: {error.strerror or error}") from None


def _fake_nvml(profile: Any) -> Any:
    from gputopo.mocks.fake_pynvml import make_fake_pynvml

    return make_fake_pynvml(profile)


def _build_fake_sysfs(profile: Any, name: str, directory: str) -> None:
    from gputopo.mocks.sysfs import build_sysfs

    build_sysfs(profile, Path(directory))


def _profile_hostname(profile: Any) -> str | None:
    hostname = getattr(getattr(profile, "node", None), "hostname", None)
    return hostname if isinstance(hostname, str) else None


def discover_topology(source: MachineSource) -> NodeTopology:
    """One discovery on the source's open session (XID counts accumulate across calls)."""
    return source.discoverer.discover()


# -- discover -------------------------------------------------------------------------------------


def add_discover_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "discover",
        help="describe this node's GPUs, NVLink domains, NUMA layout and NICs",
        description="Discover the node topology from NVML and sysfs and print it.",
    )
    add_machine_arguments(parser)
    parser.add_argument(
        "--output",
        "-o",
        choices=("json", "yaml", "text"),
        default="json",
        help="output format (default json)",
    )
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


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the argument (no usage block): the
    agent runs under a DaemonSet, where a log line is all anyone reads. ``--help`` still shows
    the usage. Subcommand parsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog=PROG, description="gputopo node agent: GPU topology discovery and publishing."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_parser in SUBCOMMANDS:
        add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except CliError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return error.status
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
