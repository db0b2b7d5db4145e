"""The clock the agent's run loop reads time through.

The loop never calls :mod:`time` or waits on an event by itself: it asks its clock, so a test
hands it a fake clock and moves time forward by hand instead of sleeping, and asserts what
happened rather than how long it took.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic time, and waiting on an event with a timeout in that time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (only differences mean anything)."""
        ...

    def event(self) -> threading.Event:
        """A new event for :meth:`wait`: made by the clock, so a fake one sees it set."""
        ...

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        """Block until ``event`` is set or ``timeout`` seconds have passed; ``event.is_set()``."""
        ...


class SystemClock:
    """The real clock: :func:`time.monotonic` and :meth:`threading.Event.wait`."""

    def monotonic(self) -> float:
        return time.monotonic()

    def event(self) -> threading.Event:
        return threading.Event()

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        return event.wait(timeout)
