"""Retrying API calls: which failures are worth another try, and how long to wait before it.

One policy for both deployables: the agent's publisher retries its Node and
NodeResourceTopology calls with it, the scheduler's informers reconnect their list/watch with
it. Capped exponential backoff with jitter, so that many clients that failed together (an API
server restart) do not come back together.
"""

from __future__ import annotations

import random as _random
import time
from collections.abc import Callable
from dataclasses import dataclass


def status_of(error: BaseException) -> int | None:
    """The HTTP status of an error answer (``KubeApiError``, the official client's
    ``ApiException``), or None for a failure without one."""
    status = getattr(error, "status", None)
    return status if isinstance(status, int) else None


def is_retryable(error: BaseException) -> bool:
    """Server errors, throttling (429) and no answer at all; never a client error (4xx)."""
    status = status_of(error)
    if status is None:
        # connection refused / reset / timeout: KubeConnectionError (an OSError), or urllib3's
        # from the official client
        return isinstance(error, OSError) or type(error).__module__.startswith("urllib3")
    return status == 429 or status >= 500


@dataclass
class Backoff:
    """Capped exponential backoff with jitter: attempt ``n`` waits between half and all of
    ``min(cap_seconds, base_seconds * 2**n)``."""

    base_seconds: float = 0.5
    cap_seconds: float = 30.0
    max_attempts: int = 6
    sleep: Callable[[float], None] = time.sleep
    random: Callable[[], float] = _random.random

    def delay(self, attempt: int) -> float:
        jitter = 0.5 + float(self.random()) / 2
        return float(min(self.cap_seconds, self.base_seconds * (2**attempt))) * jitter
