"""The API client's transport interface (``exchange``, ``open_stream``) on httpx: the second
library candidate of the request benchmark (docs/performance.md, "The HTTP client"). httpx is
not a gputopo dependency: install it to run it (``GPUTOPO_REQBENCH_TRANSPORTS=hand,httpx``)."""

from __future__ import annotations

import ssl
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from gputopo.core.kube import DEFAULT_TIMEOUT_S, KubeConnectionError


class HttpxConnections:
    """Kept-alive connections to one API server through one ``httpx.Client``."""

    def __init__(
        self,
        server: str,
        *,
        ssl_context: ssl.SSLContext | None,
        tls_server_name: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        url = urllib.parse.urlsplit(server)
        self._origin = f"{url.scheme}://{url.netloc.rpartition('@')[2]}"
        self._base_path = url.path.rstrip("/")
        self.timeout_s = timeout_s
        extensions: dict[str, Any] = {}
        if tls_server_name:
            extensions["sni_hostname"] = tls_server_name
        self._extensions = extensions
        self._client = httpx.Client(
            base_url=self._origin,
            verify=ssl_context if ssl_context is not None else True,
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
            follow_redirects=False,
        )

    def close(self) -> None:
        self._client.close()

    def exchange(
        self,
        method: str,
        target: str,
        payload: bytes | None,
        headers: Mapping[str, str],
        timeout_s: float | None = None,
    ) -> tuple[int, str, bytes]:
        target = self._base_path + target
        try:
            response = self._client.request(
                method,
                target,
                content=payload,
                headers=headers,
                timeout=timeout_s or self.timeout_s,
                extensions=self._extensions or None,
            )
        except httpx.HTTPError as error:
            where = f"{method} {self._origin}{target}"
            raise KubeConnectionError(f"{where}: {type(error).__name__}: {error}") from None
        return response.status_code, response.reason_phrase, response.content

    def open_stream(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        timeout_s: float,
        connect_timeout_s: float = 10.0,
    ) -> HttpxStream:
        target = self._base_path + target
        where = f"{method} {self._origin}{target}"
        request = self._client.build_request(
            method,
            target,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            extensions=self._extensions or None,
        )
        try:
            response = self._client.send(request, stream=True)
        except httpx.HTTPError as error:
            raise KubeConnectionError(f"{where}: {type(error).__name__}: {error}") from None
        return HttpxStream(response, where)


class HttpxStream:
    """An answer read as it arrives."""

    def __init__(self, response: httpx.Response, where: str) -> None:
        self._response = response
        self._where = where
        self.status = response.status_code
        self.reason = response.reason_phrase
        self.headers = {name.lower(): value for name, value in response.headers.items()}

    def chunks(self) -> Iterator[bytes]:
        try:
            yield from self._response.iter_raw()  # as received: a size would wait to fill it
        except httpx.HTTPError as error:
            raise KubeConnectionError(f"{self._where}: {type(error).__name__}: {error}") from None

    def read(self) -> bytes:
        return b"".join(self.chunks())

    def shutdown(self) -> None:
        self._response.close()

    def close(self) -> None:
        self._response.close()
