"""What the Node and NodeResourceTopology writers share about API calls: the field manager they
write as, how a failed call is classified (retry, give up, conflict), capped backoff with
jitter, their work counters and the result they report instead of raising."""

from __future__ import annotations

import json
import random as _random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from gputopo.agent.publish.plan import Change

FIELD_MANAGER: Final = "gputopo-agent"


@dataclass
class PublishCounters:
    """Work counters for the agent's own metrics (read by the metrics collector)."""

    cycles: int = 0
    writes: int = 0
    unchanged: int = 0
    conflicts: int = 0
    retries: int = 0
    api_errors: int = 0
    discovery_failures: int = 0


@dataclass(frozen=True)
class PublishResult:
    status: str  # "unchanged", "written", "dry-run", "skipped", "error"
    changes: tuple[Change, ...] = ()
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("unchanged", "written", "dry-run")


class ApiCallFailed(Exception):
    """An API call failed for good (non-retryable, or retries exhausted)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def status_of(error: BaseException) -> int | None:
    status = getattr(error, "status", None)
    return status if isinstance(status, int) else None


def is_retryable(error: BaseException) -> bool:
    status = status_of(error)
    if status is None:
        # connection refused / reset / timeout: gputopo.core.kubeapi's KubeConnectionError (an
        # OSError), or a urllib3 error should a transport let one through
        return isinstance(error, OSError) or type(error).__module__.startswith("urllib3")
    return status == 429 or status >= 500


def describe_api_error(error: BaseException) -> str:
    status = status_of(error)
    reason = getattr(error, "reason", None)
    if status is not None:
        body = getattr(error, "body", None)
        message = ""
        if isinstance(body, str | bytes):
            try:
                message = json.loads(body).get("message", "")
            except (ValueError, AttributeError):
                message = ""
        return f"HTTP {status} {reason or ''}".strip() + (f": {message}" if message else "")
    return f"{type(error).__name__}: {error}"


@dataclass
class Backoff:
    """Capped exponential backoff with full jitter."""

    base_seconds: float = 0.5
    cap_seconds: float = 30.0
    max_attempts: int = 6
    sleep: Callable[[float], None] = time.sleep
    random: Callable[[], float] = _random.random

    def delay(self, attempt: int) -> float:
        jitter = 0.5 + float(self.random()) / 2
        return float(min(self.cap_seconds, self.base_seconds * (2**attempt))) * jitter
