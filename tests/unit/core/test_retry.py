"""gputopo.core.retry: the one retry policy the publisher and the scheduler's informers share."""

from __future__ import annotations

from gputopo.core.kube import KubeApiError, KubeConnectionError
from gputopo.core.retry import Backoff, is_retryable, status_of


def test_the_delay_doubles_per_attempt_up_to_the_cap() -> None:
    backoff = Backoff(base_seconds=0.5, cap_seconds=4, random=lambda: 1.0)
    assert [backoff.delay(n) for n in range(6)] == [0.5, 1, 2, 4, 4, 4]


def test_jitter_waits_between_half_and_all_of_the_delay() -> None:
    assert Backoff(base_seconds=2, random=lambda: 0.0).delay(0) == 1.0
    assert Backoff(base_seconds=2, random=lambda: 0.999).delay(0) < 2.0


def test_an_api_servers_5xx_and_429_are_retried_its_4xx_not() -> None:
    def error(status: int) -> KubeApiError:
        return KubeApiError("PATCH", "/api/v1/nodes/n", status, b"")

    assert [is_retryable(error(s)) for s in (500, 503, 429)] == [True, True, True]
    assert [is_retryable(error(s)) for s in (403, 404, 409, 422)] == [False] * 4


def test_no_answer_is_retried_a_bug_is_not() -> None:
    assert is_retryable(KubeConnectionError("GET https://api:6443/x: ConnectionRefusedError"))
    assert not is_retryable(ValueError("bug"))
    assert status_of(ValueError("bug")) is None


class HttpError(Exception):
    """Any error with a ``status``, as the official client's ApiException has."""

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
