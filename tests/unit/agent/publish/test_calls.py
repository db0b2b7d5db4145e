"""The publisher's API errors described in one line, quoting the API server's message."""

from __future__ import annotations

from gputopo.agent.publish.calls import describe_api_error


class HttpError(Exception):
    def __init__(self, status: int, body: str = "") -> None:
        super().__init__(status)
        self.status = status
        self.reason = "Reason"
        self.body = body


def test_error_description_quotes_the_api_message() -> None:
    error = HttpError(403, '{"kind":"Status","message":"nodes \\"b\\" is forbidden"}')
    assert describe_api_error(error) == 'HTTP 403 Reason: nodes "b" is forbidden'
