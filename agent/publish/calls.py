"""What the Node and NodeResourceTopology writers share about API calls: the field manager they
write as, how a failed call is described, their work counters and the result they report
instead of raising. Which failures to retry, and the backoff, are the ground floor's
(:mod:`gputopo.core.retry`)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from gputopo.agent.publish.plan import FIELD_MANAGER, Change
from gputopo.core.retry import status_of

__all__ = [
    "FIELD_MANAGER",
    "ApiCallFailed",
    "PublishCounters",
    "PublishResult",
    "describe_api_error",
]


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
    partial_discoveries: int = 0  # discoveries that kept the last good topology values
    foreign_owned_keys: int = 0  # ignored ownership entries on the Node, as last read
    foreign_nrt: int = 0  # 1 while the node's NodeResourceTopology is another writer's


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
