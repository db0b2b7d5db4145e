"""Retry policy: capped exponential backoff with jitter, and which errors are retried."""

from __future__ import annotations

from gputopo.agent.publish.calls import describe_api_error
from gputopo.core.retry import Backoff, is_retryable


class HttpError(Exception):
    def __init__(self, status: int, body: str = "") -> None:
        super().__init__(status)
        self.status = status
        self.reason = "Reason"
        self.body = body


def test_backoff_doubles_and_is_capped() -> None:
    backoff = Backoff(base_seconds=1, cap_seconds=8, random=lambda: 1.0)
    assert [backoff.delay(n) for n in range(6)] == [1, 2, 4, 8, 8, 8]


def test_jitter_stays_within_half_to_full_delay() -> None:
    low = Backoff(base_seconds=2, cap_seconds=30, random=lambda: 0.0)
    assert low.delay(1) == 2.0


def test_server_errors_and_throttling_are_retried_client_errors_not() -> None:
    assert is_retryable(HttpError(503))
    assert is_retryable(HttpError(500))
    assert is_retryable(HttpError(429))
    assert not is_retryable(HttpError(403))
    assert not is_retryable(HttpError(422))
    assert is_retryable(ConnectionRefusedError())
    assert not is_retryable(ValueError("bug"))


def test_error_description_quotes_the_api_message() -> None:
    error = HttpError(403, '{"kind":"Status","message":"nodes \\"b\\" is forbidden"}')
    assert describe_api_error(error) == 'HTTP 403 Reason: nodes "b" is forbidden'
