"""The machine a subcommand describes: ``--mock`` / ``--sysfs-root`` / ``--node-name``.

Shared by every agent subcommand that discovers (``discover``, ``record``, ``labels``, ``run``),
so the CLI's modules import it and never each other. A bad profile or sysfs root is a
:class:`CliError` naming the flag.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gputopo.agent.discovery import Discoverer
from gputopo.agent.sysfs import SysfsReader
from gputopo.agent.topology import NodeTopology
from gputopo.core.cli import CliError
from gputopo.core.validate import is_dns_subdomain


class NodeName:
    """An argparse ``type``: a Kubernetes node name (DNS-1123 subdomain), so ``../../x`` or an
    upper-case name is a usage error (exit 2, one line) before any request names it. Its
    ``__name__`` is what an environment twin's error says was expected."""

    def __init__(self) -> None:
        self.__name__ = "a node name (DNS-1123 subdomain: a-z, 0-9, '-' and '.', at most 253)"

    def __call__(self, text: str) -> str:
        if not is_dns_subdomain(text):
            shown = repr(text) if len(text) <= 80 else repr(text[:80]) + "..."
            raise argparse.ArgumentTypeError(f"expected {self.__name__}, got {shown}")
        return text


node_name = NodeName()


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
        "--node-name",
        type=node_name,
        metavar="NAME",
        help="node name to report (default: the hostname)",
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


def check_machine_arguments(args: argparse.Namespace) -> None:
    """--sysfs-root and --mock checked up front (the profile is read, then dropped), so that
    ``run`` refuses a bad one before it talks to any cluster."""
    if args.sysfs_root is not None:
        _check_sysfs_root(args.sysfs_root)
    if args.mock is not None:
        _load_profile(args.mock)


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
    from gputopo.mocks.sysfs import SysfsBuildError, build_sysfs

    try:
        build_sysfs(profile, Path(directory))
    except SysfsBuildError as error:
        raise CliError(f"--mock {name!r}: {error}") from None
    except OSError as error:  # two devices at one path: a file where a directory must go
        raise CliError(
            f"--mock {name!r}: cannot build its sysfs tree: {error.strerror or error}"
        ) from None


def _profile_hostname(profile: Any) -> str | None:
    hostname = getattr(getattr(profile, "node", None), "hostname", None)
    return hostname if isinstance(hostname, str) else None


def discover_topology(source: MachineSource) -> NodeTopology:
    """One discovery on the source's open session (XID counts accumulate across calls)."""
    return source.discoverer.discover()
