"""`kubectl-gputopo`'s console script: the `scheduler` extra checked before anything imports it.

The plugin reuses the scheduler's model and simulator, which need the `scheduler` extra (numpy,
cel-python). An install without it (the agent's) gets one line saying what to install, as
`gputopo-scheduler` does, instead of a traceback from an import.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from gputopo.core.cli import EXIT_FAILURE, error_line
from gputopo.scheduler.cli import missing_extra, missing_extra_message

PROG = "kubectl-gputopo"


def main(argv: Sequence[str] | None = None) -> int:
    missing = missing_extra()
    if missing is not None:
        print(error_line(PROG, missing_extra_message(missing)), file=sys.stderr)
        return EXIT_FAILURE
    from gputopo.kubectl.cli import main as plugin_main

    return plugin_main(argv)


if __name__ == "__main__":
    sys.exit(main())
