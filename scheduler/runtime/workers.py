"""Fire-and-forget worker threads for the runtime's API writes (binds, events, statuses).

``concurrent.futures.ThreadPoolExecutor`` costs the submitting thread a Future, a work item
and a semaphore probe per task; profiled on the end-to-end benchmark that was a tenth of the
scheduling loop's time, for results nobody reads. Here a submit is one ``SimpleQueue.put``.
A task that raises is logged with its traceback instead of vanishing into an unread Future.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("gputopo.scheduler.runtime")

_STOP = object()


class WorkerPool:
    """``workers`` daemon threads running submitted calls in submission order per thread."""

    def __init__(self, name: str, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"{name} workers: {workers}: expected at least 1")
        self.name = name
        self._tasks: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._started = False
        self._start_lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}_{index}", daemon=True)
            for index in range(workers)
        ]

    def submit(self, fn: Callable[..., object], *args: Any) -> None:
        """Queue ``fn(*args)``; after ``shutdown`` it is refused (RuntimeError), as executors do."""
        if self._closed:
            raise RuntimeError(f"{self.name} pool is shut down")
        if not self._started:
            self._start()
        self._tasks.put((fn, args))

    def _start(self) -> None:
        """The threads start with the first task: a pool that is never used costs nothing."""
        with self._start_lock:
            if not self._started:
                for thread in self._threads:
                    thread.start()
                self._started = True

    def shutdown(self, wait: bool = True) -> None:
        """Run what is queued, then stop the threads (joined when ``wait``)."""
        with self._start_lock:
            if not self._closed:
                self._closed = True
                for _ in self._threads:
                    self._tasks.put(_STOP)
            started = self._started
        if wait and started:
            for thread in self._threads:
                thread.join()

    def _work(self) -> None:
        while True:
            task = self._tasks.get()
            if task is _STOP:
                return
            fn, args = task
            try:
                fn(*args)
            except Exception:
                log.exception("background task failed", extra={"pool": self.name})
