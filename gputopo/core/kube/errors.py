"""The API client's three errors, one of each for the agent and the scheduler alike.

:class:`KubeApiError` has the attributes of the official client's ``ApiException``
(``status``, ``reason``, ``body``) so code that handles both reads either.
"""

from __future__ import annotations

import json


class KubeConfigError(ValueError):
    """A kubeconfig or in-cluster configuration gputopo cannot use: one line naming it."""

    def __init__(self, source: str, detail: str) -> None:
        super().__init__(f"{source}: {detail}")
        self.source = source
        self.detail = detail


class KubeApiError(Exception):
    """The API server answered with an error status.

    ``reason`` is the Status object's reason (``Conflict``, ``NotFound``, ``Expired``) where the
    body is one, else the HTTP reason phrase; ``message`` the Status message, else the start of
    the body; ``body`` the whole body as text.
    """

    def __init__(
        self, method: str, path: str, status: int, body: bytes | str, http_reason: str = ""
    ) -> None:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        reason, message = http_reason, text[:500]
        try:
            document = json.loads(text)
        except ValueError:
            document = None
        if isinstance(document, dict):
            reason = str(document.get("reason") or http_reason)
            message = str(document.get("message", ""))
        self.method = method
        self.path = path
        self.status = status
        self.reason = reason
        self.message = message
        self.body = text
        head = f"{method} {path}: HTTP {status} {reason}".rstrip()
        super().__init__(f"{head}: {message}" if message else head)


class KubeConnectionError(ConnectionError):
    """No answer from the API server (refused, reset, timed out, TLS failure)."""
