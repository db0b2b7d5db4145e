"""How both CLIs run a command: parse, configure logs, call the handler, turn errors into a line.

Both ``gputopo-agent`` and ``gputopo-scheduler`` are argparse subcommands whose handler returns
the exit status. :func:`run_command` is the part they share, so they cannot drift apart: a
:class:`CliError` or one of the CLI's own input-error types becomes
``<program>: error: <message>`` on stderr and its status (2 unless the error says otherwise),
never a traceback; logs go to stderr in ``--log-format`` for the command's life.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from gputopo.core.flags import EXIT_USAGE, UsageError
from gputopo.core.logs import logging_configured

EXIT_FAILURE = 1  # the command ran and failed (a publish that did not go through)
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A user error: the message names the input; ``status`` is the exit code."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.status = status


def error_line(program: str, message: object) -> str:
    """The one line every user error is: ``gputopo-agent: error: --mock 'x': ...``."""
    return f"{program}: error: {message}"


def run_command(
    program: str,
    build_parser: Callable[[], argparse.ArgumentParser],
    argv: Sequence[str] | None,
    user_errors: tuple[type[Exception], ...] = (),
) -> int:
    """Parse ``argv``, then run the chosen subcommand's ``handler`` with logs configured.

    argparse's own usage errors exit (status 2, one line) from :meth:`parse_args`, as argparse
    does; everything else returns the status."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as error:  # a bad GPUTOPO_* twin, found while building the parser
        print(error, file=sys.stderr)
        return EXIT_USAGE
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        with logging_configured(args.log_format, args.log_level):
            return handler(args)
    except CliError as error:
        print(error_line(program, error), file=sys.stderr)
        return error.status
    except UsageError as error:
        print(error, file=sys.stderr)
        return EXIT_USAGE
    except user_errors as error:
        print(error_line(program, error), file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # piped into `head`
        return 0
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
