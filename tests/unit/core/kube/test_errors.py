"""gputopo.core.kube.errors: one error type for an error answer, read the same way by the agent's
publisher and the scheduler's runtime."""

from __future__ import annotations

from gputopo.core.kube import KubeApiError


def test_a_status_body_gives_the_reason_and_message() -> None:
    body = b'{"kind":"Status","reason":"Expired","message":"too old resource version","code":410}'
    error = KubeApiError("GET", "/api/v1/pods", 410, body, "Gone")
    assert (error.status, error.reason, error.message) == (
        410,
        "Expired",
        "too old resource version",
    )
    assert str(error) == "GET /api/v1/pods: HTTP 410 Expired: too old resource version"
    assert error.body == body.decode()


def test_a_body_that_is_not_a_status_keeps_the_http_reason_and_its_start() -> None:
    error = KubeApiError("POST", "/x", 502, b"<html>bad gateway</html>" + b"." * 600, "Bad Gateway")
    assert error.reason == "Bad Gateway"
    assert error.message.startswith("<html>bad gateway</html>") and len(error.message) == 500
    assert "\n" not in str(error)


def test_an_empty_body_is_the_status_line_alone() -> None:
    assert (
        str(KubeApiError("DELETE", "/x", 404, b"", "Not Found")) == "DELETE /x: HTTP 404 Not Found"
    )
