"""The API client's transport interface (``exchange``, ``open_stream``) on urllib3.

Kept beside the request benchmark so the comparison with the hand-written HTTP/1.1 framing
(docs/performance.md, "The HTTP client") can be re-run: it is the library candidate, written
the way production would use it (one pool per API server, no per-request objects built).
"""

from __future__ import annotations

import contextlib
import ssl
import urllib.parse
from collections.abc import Iterator, Mapping

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error

from gputopo.core.kube import DEFAULT_TIMEOUT_S, KubeConnectionError

# One retry, for a failure to connect or (idempotent verbs only) an answer never read: a
# kept-alive connection the server closed between urllib3's liveness check and the request.
_RETRIES = urllib3.Retry(total=1, connect=1, read=1, status=0, other=0, redirect=False)


class Urllib3Connections:
    """Kept-alive connections to one API server through a urllib3 pool."""

    def __init__(
        self,
        server: str,
        *,
        ssl_context: ssl.SSLContext | None,
        tls_server_name: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        pool_size: int = 32,
    ) -> None:
        url = urllib.parse.urlsplit(server)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"API server URL {server!r}: not an http(s) URL")
        self.server = server
        self.timeout_s = timeout_s
        self._origin = f"{url.scheme}://{url.netloc.rpartition('@')[2]}"
        self._base_path = url.path.rstrip("/")
        self._timeout = urllib3.Timeout(connect=timeout_s, read=timeout_s)
        self._pool: urllib3.HTTPConnectionPool
        if url.scheme == "https":
            if ssl_context is None:
                raise ValueError(f"API server URL {server!r}: https needs a TLS context")
            verify = ssl_context.verify_mode != ssl.CERT_NONE
            self._pool = urllib3.HTTPSConnectionPool(
                url.hostname,
                url.port or 443,
                maxsize=pool_size,
                block=False,
                retries=_RETRIES,
                timeout=self._timeout,
                ssl_context=ssl_context,
                cert_reqs="CERT_REQUIRED" if verify else "CERT_NONE",
                server_hostname=tls_server_name,
            )
        else:
            self._pool = urllib3.HTTPConnectionPool(
                url.hostname,
                url.port or 80,
                maxsize=pool_size,
                block=False,
                retries=_RETRIES,
                timeout=self._timeout,
            )

    def close(self) -> None:
        self._pool.close()

    def exchange(
        self,
        method: str,
        target: str,
        payload: bytes | None,
        headers: Mapping[str, str],
        timeout_s: float | None = None,
    ) -> tuple[int, str, bytes]:
        target = self._base_path + target
        timeout = (
            self._timeout
            if timeout_s is None or timeout_s == self.timeout_s
            else urllib3.Timeout(connect=timeout_s, read=timeout_s)
        )
        try:
            response = self._pool.urlopen(
                method,
                target,
                body=payload,
                headers=dict(headers),
                timeout=timeout,
                redirect=False,
                assert_same_host=False,
                decode_content=False,
            )
        except Urllib3Error as error:
            where = f"{method} {self._origin}{target}"
            raise KubeConnectionError(f"{where}: {type(error).__name__}: {error}") from None
        return response.status, response.reason or "", response.data

    def open_stream(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        timeout_s: float,
        connect_timeout_s: float = 10.0,
    ) -> Urllib3Stream:
        target = self._base_path + target
        where = f"{method} {self._origin}{target}"
        try:
            response = self._pool.urlopen(
                method,
                target,
                headers=dict(headers),
                timeout=urllib3.Timeout(connect=connect_timeout_s, read=timeout_s),
                retries=False,
                redirect=False,
                preload_content=False,
                decode_content=False,
                assert_same_host=False,
            )
        except Urllib3Error as error:
            raise KubeConnectionError(f"{where}: {type(error).__name__}: {error}") from None
        return Urllib3Stream(response, where)


class Urllib3Stream:
    """An answer read as it arrives; :meth:`shutdown` ends a read blocked in another thread."""

    def __init__(self, response: urllib3.BaseHTTPResponse, where: str) -> None:
        self._response = response
        self._where = where
        self.status = response.status
        self.reason = response.reason or ""
        self.headers = {name.lower(): value for name, value in response.headers.items()}

    def chunks(self) -> Iterator[bytes]:
        try:
            yield from self._response.stream(65536, decode_content=False)
        except (Urllib3Error, OSError, ValueError, AttributeError) as error:
            raise KubeConnectionError(f"{self._where}: {type(error).__name__}: {error}") from None

    def read(self) -> bytes:
        return b"".join(self.chunks())

    def shutdown(self) -> None:
        # RuntimeError: the stream already ended and its connection went back to the pool.
        with contextlib.suppress(RuntimeError):
            self._response.shutdown()

    def close(self) -> None:
        self._response.close()
        self._response.release_conn()
