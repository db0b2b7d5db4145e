"""How the long-running scheduler commands (`run`, `extender`) learn they should stop."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger("gputopo.scheduler.cli")


def stop_on_signals() -> threading.Event:
    """An event that SIGTERM or SIGINT sets (and logs); the command stops cleanly when it is set."""
    stopping = threading.Event()

    def on_signal(signum: int, _: FrameType | None) -> None:
        log.info("signal received, stopping", extra={"signal": signal.Signals(signum).name})
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stopping
