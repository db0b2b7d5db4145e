"""One command-line convention for both deployables: env twins, one-line errors, shared flags.

A Deployment or DaemonSet configures through ``env`` as naturally as through ``args``; every
option gets a twin named after its long flag (``--log-level`` -> ``GPUTOPO_LOG_LEVEL``). A set
variable becomes the option's default, checked exactly as the flag would be — argparse never
checks a default against ``type`` or ``choices`` — so an explicit flag still wins and a bad value
is one line naming the variable.

Every user error, whether argparse's, a bad twin's or a handler's, is one line on stderr,
``<program>: error: <what was wrong with which input>``, and exit status 2 (:data:`EXIT_USAGE`);
a log line is all anyone reads of a pod in ``CrashLoopBackOff``. ``--version``,
``-o/--output``, ``--kubeconfig``/``--context`` are added by the helpers here, so both CLIs spell
them alike.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping, Sequence
from typing import NoReturn

from gputopo import __version__

EXIT_USAGE = 2

ENV_PREFIX = "GPUTOPO_"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class UsageError(SystemExit):
    """A user error found while building or checking the command line: ``str()`` is the one
    line to print, the exit status is :data:`EXIT_USAGE`. The CLIs' ``main`` prints it; a
    SystemExit, so a caller without such a ``main`` still stops with status 2."""

    def __init__(self, line: str) -> None:
        super().__init__(line)
        self.code = EXIT_USAGE


def program_of(prog: str) -> str:
    """``gputopo-agent run`` -> ``gputopo-agent``: errors name the program, as the handler's do."""
    return prog.split(" ", 1)[0]


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the argument (no usage block): the
    deployables run in pods, where a log line is all anyone reads. ``--help`` still shows the
    usage. Subcommand parsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{program_of(self.prog)}: error: {message} (see --help)\n")


def add_version_argument(parser: argparse.ArgumentParser, program: str) -> None:
    """``--version``: ``<program> <version>`` on stdout, exit 0."""
    parser.add_argument("--version", action="version", version=f"{program} {__version__}")


def add_output_argument(
    parser: argparse.ArgumentParser, choices: Sequence[str], default: str
) -> None:
    """``-o/--output FORMAT`` for a subcommand that prints a document."""
    parser.add_argument(
        "--output",
        "-o",
        choices=tuple(choices),
        default=default,
        help=f"output format (default {default})",
    )


def add_kubeconfig_arguments(parser: argparse.ArgumentParser) -> None:
    """``--kubeconfig`` and ``--context``, the same for every subcommand that talks to a cluster
    (the policy of what a kubeconfig may hold is :mod:`gputopo.core.kube.config`'s)."""
    parser.add_argument(
        "--kubeconfig",
        default=None,
        metavar="FILE",
        help="kubeconfig file (default: in-cluster, else $KUBECONFIG, else ~/.kube/config)",
    )
    parser.add_argument(
        "--context",
        default=None,
        metavar="NAME",
        help="kubeconfig context (default: its current-context; ignored in-cluster)",
    )


def env_name(flag: str) -> str:
    """``--metrics-address`` -> ``GPUTOPO_METRICS_ADDRESS``."""
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def apply_env_twins(
    parser: argparse.ArgumentParser, program: str, names: Mapping[str, str] | None = None
) -> None:
    """Give every option on ``parser`` its environment twin (``names`` overrides a flag's
    variable name). A repeatable (append) option's twin supplies one value; a
    ``--x/--no-x`` option's twin is true or false. A bad value raises :class:`UsageError`,
    ``<program>: error: NAME='value': expected ...``."""
    program = program_of(program)
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse.BooleanOptionalAction):
            flag = action.option_strings[0]  # --leader-elect, not --no-leader-elect
        else:
            flag = max(action.option_strings, key=len)
        name = (names or {}).get(flag, env_name(flag))
        if action.help and name not in action.help:
            action.help += f" (env {name})"
        raw = os.environ.get(name)
        if raw is None or raw == "":
            continue
        if isinstance(action, argparse._StoreConstAction | argparse.BooleanOptionalAction):
            word = raw.strip().lower()
            if word not in _TRUE | _FALSE:
                raise UsageError(f"{program}: error: {name}={raw!r}: expected true or false")
            if isinstance(action, argparse.BooleanOptionalAction):
                action.default = word in _TRUE
            elif word in _TRUE:
                action.default = action.const
            continue
        if action.choices is not None and raw not in action.choices:
            expected = ", ".join(map(str, action.choices))
            raise UsageError(f"{program}: error: {name}={raw!r}: expected one of {expected}")
        kind = action.type if callable(action.type) else str
        try:
            value = kind(raw)
        except (ValueError, argparse.ArgumentTypeError):
            what = getattr(kind, "__name__", "a valid value")
            raise UsageError(f"{program}: error: {name}={raw!r}: expected {what}") from None
        action.default = [value] if isinstance(action, argparse._AppendAction) else value


class Bounded:
    """An argparse ``type``: a finite number within a range, so that ``nan``, ``inf``, ``1e309``,
    a negative interval or a worker count that would exhaust the machine is a usage error (exit
    2, one line) instead of a loop running with it. Its ``__name__`` is what an environment
    twin's error says was expected."""

    def __init__(
        self,
        kind: type[int] | type[float],
        low: float,
        high: float,
        *,
        low_open: bool = False,
    ) -> None:
        self.kind = kind
        self.low = low
        self.high = high
        self.low_open = low_open
        noun = "an integer" if kind is int else "a number"
        left = "(" if low_open else "["
        self.__name__ = f"{noun} in {left}{low:g}, {high:g}]"

    def __call__(self, text: str) -> int | float:
        raw = text.strip()
        try:
            if self.kind is int:
                if len(raw) > 20:
                    raise ValueError(raw)
                value: int | float = int(raw)
            else:
                value = float(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {self.__name__}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected {self.__name__}, got {text!r}")
        below = value <= self.low if self.low_open else value < self.low
        if below or value > self.high:
            raise argparse.ArgumentTypeError(f"expected {self.__name__}, got {text!r}")
        return value


def seconds(low: float = 0.0, high: float = 7 * 86400.0, *, low_open: bool = True) -> Bounded:
    """A duration flag: positive (or from ``low``) and at most a week unless said otherwise."""
    return Bounded(float, low, high, low_open=low_open)


def count(low: int, high: int) -> Bounded:
    """An integer flag with both bounds inclusive (workers, attempts, sizes)."""
    return Bounded(int, low, high)
