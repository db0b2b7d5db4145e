"""The one polling helper of the suite: wait for a condition in real time, for tests that talk
to real processes (the API server, Prometheus, the agent's own threads on the real clock).

Unit tests of the agent's loop do not poll: they drive a fake clock
(tests/unit/agent/fake_clock.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(
    check: Callable[[], T | None],
    timeout_s: float = 30.0,
    what: str = "condition",
    *,
    interval_s: float = 0.1,
) -> T:
    """Call ``check`` until it returns something truthy and return that; fail naming ``what``
    (and the last answer) when ``timeout_s`` passes first."""
    deadline = time.monotonic() + timeout_s
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout_s:g} s waiting for {what} (last: {last!r})"
            )
        time.sleep(interval_s)
