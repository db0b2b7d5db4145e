"""Flags with ``GPUTOPO_*`` environment twins, for both the agent's and the scheduler's CLIs.

A Deployment or DaemonSet configures through ``env`` as naturally as through ``args``; every
option gets a twin named after its long flag (``--log-level`` -> ``GPUTOPO_LOG_LEVEL``). A set
variable becomes the option's default, checked exactly as the flag would be — argparse never
checks a default against ``type`` or ``choices`` — so an explicit flag still wins and a bad value
is one line naming the variable.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

ENV_PREFIX = "GPUTOPO_"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def env_name(flag: str) -> str:
    """``--metrics-address`` -> ``GPUTOPO_METRICS_ADDRESS``."""
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def apply_env_twins(
    parser: argparse.ArgumentParser, program: str, names: Mapping[str, str] | None = None
) -> None:
    """Give every option on ``parser`` its environment twin (``names`` overrides a flag's
    variable name). A repeatable (append) option's twin supplies one value; a
    ``--x/--no-x`` option's twin is true or false. ``program`` prefixes error lines."""
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
                raise SystemExit(f"{program}: {name}={raw!r}: expected true or false")
            if isinstance(action, argparse.BooleanOptionalAction):
                action.default = word in _TRUE
            elif word in _TRUE:
                action.default = action.const
            continue
        if action.choices is not None and raw not in action.choices:
            expected = ", ".join(map(str, action.choices))
            raise SystemExit(f"{program}: {name}={raw!r}: expected one of {expected}")
        kind = action.type if callable(action.type) else str
        try:
            value = kind(raw)
        except (ValueError, argparse.ArgumentTypeError):
            what = getattr(kind, "__name__", "a valid value")
            raise SystemExit(f"{program}: {name}={raw!r}: expected {what}") from None
        action.default = [value] if isinstance(action, argparse._AppendAction) else value
