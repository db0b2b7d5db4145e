"""One log schema for both deployables: JSON lines for machines, ``--log-format text`` for people.

A JSON line is one object: ``time`` (UTC, RFC 3339 with milliseconds and ``Z``), ``level``
(``debug``, ``info``, ``warning``, ``error``, ``critical``), ``logger`` (always under
``gputopo.``), ``msg``, then any fields the call passed with ``extra=`` (``pod``, ``node``,
``reason``, ...), and ``exception`` with the traceback when there is one. The handler sits on the
root logger, so every module's logger — and a library's warning — comes out in the one format;
the level applies to the ``gputopo`` tree.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator

LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("debug", "info", "warning", "error")
ROOT_LOGGER = "gputopo"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    """``--log-format json|text`` and ``--log-level``, the same on every subcommand."""
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="json",
        help="log line format on stderr (default json)",
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="info",
        help="least level logged (default info)",
    )


def utc_timestamp(created: float) -> str:
    """``2026-01-02T03:04:05.678Z``: what the ``time`` field holds."""
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{whole}.{int(created * 1000) % 1000:03d}Z"


def extras(record: logging.LogRecord) -> dict[str, object]:
    """The fields a call passed with ``extra=``."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class TextFormatter(logging.Formatter):
    """``2026-01-02 03:04:05,678 WARNING gputopo.x: message key=value ...``: the JSON line's
    content for a person, the extras included."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = " ".join(f"{key}={value}" for key, value in extras(record).items())
        if not fields:
            return line
        head, newline, traceback = line.partition("\n")
        return f"{head} {fields}{newline}{traceback}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, msg, the extras, and exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": utc_timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in extras(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"), default=str)


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of the record, not at set-up (so a test
    that captures stderr, or a process that replaces it, still gets the lines)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def formatter(log_format: str) -> logging.Formatter:
    """The formatter ``--log-format`` names; ValueError for anything else."""
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return TextFormatter()
    raise ValueError(f"--log-format {log_format!r}: expected one of {', '.join(LOG_FORMATS)}")


def configure_logging(log_format: str = "json", level: str = "info") -> None:
    """Send every logger's records to stderr in ``log_format``; gputopo's from ``level`` up.

    Idempotent: a second call replaces the handler the first installed (other handlers, such as
    a test runner's, are left alone). Libraries keep the root logger's level (warnings)."""
    handler = StderrHandler()
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, StderrHandler)]
    root.addHandler(handler)
    tree = logging.getLogger(ROOT_LOGGER)
    tree.setLevel(level.upper())
    tree.propagate = True


@contextlib.contextmanager
def logging_configured(log_format: str = "json", level: str = "info") -> Iterator[None]:
    """:func:`configure_logging` for the life of a command, undone afterwards (a command run
    in-process — by a test, or a tool embedding the CLI — leaves logging as it found it)."""
    tree = logging.getLogger(ROOT_LOGGER)
    saved_level = tree.level
    configure_logging(log_format, level)
    try:
        yield
    finally:
        root = logging.getLogger()
        root.handlers[:] = [h for h in root.handlers if not isinstance(h, StderrHandler)]
        tree.setLevel(saved_level)
