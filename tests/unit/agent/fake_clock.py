"""A clock for the agent's loop that moves only when the test says so.

The loop's threads (main, health, events, and a fake udev monitor) park in :meth:`FakeClock.wait`.
A test moves time with :meth:`FakeClock.advance` and then :meth:`FakeClock.settle`\\ s: it blocks
until the expected number of threads are parked again with nothing due, that is until the loop
has done everything that time (or a trigger) made due. Nothing sleeps; no test asserts how long
anything took, only what happened.
"""

from __future__ import annotations

import threading


class _Waiter:
    def __init__(self, event: threading.Event, deadline: float | None) -> None:
        self.event = event
        self.deadline = deadline


class _ClockEvent(threading.Event):
    """An event that wakes the clock's sleepers when set, so they notice."""

    def __init__(self, condition: threading.Condition) -> None:
        super().__init__()
        self._clock_condition = condition

    def set(self) -> None:
        super().set()
        with self._clock_condition:
            self._clock_condition.notify_all()


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._condition = threading.Condition()  # an RLock: a signal handler may set an event
        self._waiters: list[_Waiter] = []

    # the Clock protocol (agent/clock.py)

    def monotonic(self) -> float:
        with self._condition:
            return self._now

    def event(self) -> threading.Event:
        return _ClockEvent(self._condition)

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        with self._condition:
            waiter = _Waiter(event, None if timeout is None else self._now + timeout)
            self._waiters.append(waiter)
            self._condition.notify_all()
            try:
                while not self._due(waiter):
                    self._condition.wait()
            finally:
                self._waiters.remove(waiter)
                self._condition.notify_all()
            return event.is_set()

    # driving it

    def advance(self, seconds: float) -> None:
        """Move time forward; whoever's timeout has passed wakes."""
        with self._condition:
            self._now += seconds
            self._condition.notify_all()

    def settle(self, threads: int, timeout_s: float = 10.0) -> None:
        """Block until exactly ``threads`` threads are parked in :meth:`wait` with nothing due.
        ``timeout_s`` (real seconds) only turns a hang into a failure."""
        with self._condition:
            if not self._condition.wait_for(lambda: self._parked() == threads, timeout_s):
                raise AssertionError(
                    f"{self._parked()} thread(s) parked on the clock, expected {threads}"
                )

    def tick(self, seconds: float, threads: int) -> None:
        """:meth:`advance`, then :meth:`settle`."""
        self.advance(seconds)
        self.settle(threads)

    def _due(self, waiter: _Waiter) -> bool:
        return waiter.event.is_set() or (
            waiter.deadline is not None and self._now >= waiter.deadline
        )

    def _parked(self) -> int:
        return sum(not self._due(waiter) for waiter in self._waiters)
