"""HTTP/1.1 to one API server, framed by hand on the (TLS) socket: kept-alive connections
for requests (:meth:`HttpConnections.exchange`) and a connection of its own per watch
(:meth:`HttpConnections.open_stream`). The agent's client and the scheduler's both send
through it.

Why not a library: measured on a real API server (``reqbench``,
tests/bench/test_request_bench.py, docs/performance.md "The HTTP client"), urllib3 took about
three times the CPU per request on the scheduler's bind path (GET, PATCH, binding and Event
POSTs: 380-590 µs against 130-200 µs; most of it ``http.client`` and the ``email`` header
parser under urllib3) and httpx five to six times, CPU the bind and event threads take from
the scheduling loop under the GIL; end to end the scheduler's CPU per pod rose by 28 % with
urllib3. What this module has to get right, and its tests pin: bodies by length, chunked or
until close; ``Connection: close``; one retry, on a fresh connection, of a request sent on a
pooled connection the server had closed; TLS with a configured server name; and a watch
another thread can end at once (:meth:`HttpStream.shutdown`).
"""

from __future__ import annotations

import contextlib
import io
import queue
import socket
import ssl
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final, cast

from gputopo.core.kube.errors import KubeConnectionError

DEFAULT_TIMEOUT_S: Final = 30.0


# Pooled connections idle longer than this are closed rather than reused: kube-apiserver's
# HTTP/1.1 server closes connections idle for 90 s, and a request sent on one it has closed
# fails (retried once, on a fresh connection).
MAX_IDLE_S: Final = 60.0


class HttpConnections:
    """Kept-alive HTTP/1.1 connections to one API server, shared by any number of threads.

    A LIFO pool: a thread takes an idle connection (or opens one), sends one request, reads
    the whole answer and puts the connection back. The agent uses one at a time; the
    scheduler's bind and event workers use many (``scheduler/runtime/kube.py``), and its
    watches each take a dedicated connection of their own (:meth:`open_stream`).

    HTTP/1.1 is spoken directly on the (TLS) socket rather than through ``http.client``:
    one ``sendall`` per request and a status line and a few headers parsed from a buffered
    reader, without the ``email`` package's header parser. Measured on a real API server
    that halves the transport's CPU per request (the scheduler makes two per pod).
    """

    def __init__(
        self,
        server: str,
        *,
        ssl_context: ssl.SSLContext | None,
        tls_server_name: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        url = urllib.parse.urlsplit(server)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"API server URL {server!r}: not an http(s) URL")
        if url.scheme == "https" and ssl_context is None:
            raise ValueError(f"API server URL {server!r}: https needs a TLS context")
        self.server = server
        self.timeout_s = timeout_s
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._host_header = url.netloc.rpartition("@")[2]
        self._origin = f"{url.scheme}://{self._host_header}"  # errors name origin + target
        self._base_path = url.path.rstrip("/")
        self._ssl = ssl_context if url.scheme == "https" else None
        self._tls_server_name = tls_server_name
        self._idle: queue.LifoQueue[_Connection] = queue.LifoQueue()

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

    def _take_idle(self) -> _Connection | None:
        """A pooled connection idle for less than MAX_IDLE_S, or None; older ones are closed
        (kube-apiserver closes HTTP/1.1 connections idle for 90 s)."""
        now = time.monotonic()
        while True:
            try:
                connection = self._idle.get_nowait()
            except queue.Empty:
                return None
            if now - connection.idle_since < MAX_IDLE_S:
                return connection
            connection.close()

    def _connect(self, timeout_s: float) -> _Connection:
        sock = socket.create_connection((self._host, self._port), timeout_s)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl is not None:
                sock = self._ssl.wrap_socket(
                    sock, server_hostname=self._tls_server_name or self._host
                )
        except BaseException:
            sock.close()
            raise
        return _Connection(sock)

    def _request_bytes(
        self, method: str, target: str, payload: bytes | None, headers: Mapping[str, str]
    ) -> bytes:
        lines = [f"{method} {target} HTTP/1.1\r\nHost: {self._host_header}\r\n"]
        for name, value in headers.items():
            if "\n" in value or "\r" in value:
                raise ValueError(f"HTTP header {name}: a value must be one line")
            lines.append(f"{name}: {value}\r\n")
        if payload is not None:
            lines.append(f"Content-Length: {len(payload)}\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")
        return head + payload if payload else head

    def exchange(
        self,
        method: str,
        target: str,
        payload: bytes | None,
        headers: Mapping[str, str],
        timeout_s: float | None = None,
    ) -> tuple[int, str, bytes]:
        """Send one request (``target``: path and query) and read the whole answer:
        (status, reason, body). No answer raises :class:`KubeConnectionError`."""
        timeout = timeout_s or self.timeout_s
        target = self._base_path + target
        request = self._request_bytes(method, target, payload, headers)
        for attempt in range(2):
            connection: _Connection | None = None
            reused = False
            answered = False
            try:
                # The retry never takes another pooled connection: after a quiet spell every
                # one of them may have been closed by the server.
                connection = self._take_idle() if attempt == 0 else None
                if connection is not None:
                    reused = True
                    connection.sock.settimeout(timeout)
                else:
                    connection = self._connect(timeout)
                connection.sock.sendall(request)
                head = _read_head(connection.reader)
                answered = True
                data = _read_body(connection.reader, head, method)
            except (OSError, HttpProtocolError) as error:
                if connection is not None:
                    connection.close()
                # A kept-alive connection the server (or a load balancer) closed while idle:
                # nothing was answered, so nothing was processed and one fresh attempt is safe.
                stale = isinstance(error, BrokenPipeError | ConnectionResetError | ssl.SSLEOFError)
                if reused and stale and not answered and attempt == 0:
                    continue
                where = f"{method} {self._origin}{target}"
                raise KubeConnectionError(f"{where}: {type(error).__name__}: {error}") from None
            if head.will_close:
                connection.close()
            else:
                connection.idle_since = time.monotonic()
                self._idle.put(connection)
            return head.status, head.reason, data
        raise AssertionError("unreachable")  # pragma: no cover

    def open_stream(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        timeout_s: float,
        connect_timeout_s: float = 10.0,
    ) -> HttpStream:
        """Send one request on a connection of its own and return once the answer's head is
        read; the body is read as it arrives (a watch). Never pooled: closed when done."""
        target = self._base_path + target
        request = self._request_bytes(method, target, None, headers)
        connection: _Connection | None = None
        try:
            connection = self._connect(connect_timeout_s)
            connection.sock.settimeout(timeout_s)
            connection.sock.sendall(request)
            head = _read_head(connection.reader)
        except (OSError, HttpProtocolError) as error:
            if connection is not None:
                connection.close()
            where = f"{method} {self._origin}{target}"
            raise KubeConnectionError(f"{where}: {type(error).__name__}: {error}") from None
        return HttpStream(connection, head, method, f"{method} {self._origin}{target}")


class HttpProtocolError(Exception):
    """An answer that is not the HTTP/1.1 this client reads."""


class ServerDisconnected(ConnectionResetError):
    """The server closed the connection before answering."""


_MAX_LINE: Final = 65536
_MAX_HEADERS: Final = 100


class _Connection:
    """One HTTP/1.1 connection: a socket (TLS-wrapped for https) and a buffered reader on it."""

    __slots__ = ("idle_since", "reader", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = cast(io.BufferedReader, sock.makefile("rb", buffering=65536))
        self.idle_since = time.monotonic()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.reader.close()
        with contextlib.suppress(OSError):
            self.sock.close()

    def interrupt(self) -> None:
        """End a read blocked in another thread: shut the socket itself down (under any TLS,
        whose state only the reading thread touches)."""
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)


@dataclass(frozen=True)
class _Head:
    status: int
    reason: str
    headers: dict[str, str]  # names lower-cased
    will_close: bool


def _read_head(reader: io.BufferedReader) -> _Head:
    while True:
        line = reader.readline(_MAX_LINE + 1)
        if not line:
            raise ServerDisconnected("the server closed the connection without answering")
        version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise HttpProtocolError(f"not an HTTP/1.x status line: {line[:80]!r}")
        headers: dict[str, str] = {}
        while True:
            field = reader.readline(_MAX_LINE + 1)
            if field in (b"\r\n", b"\n"):
                break
            if not field:
                raise HttpProtocolError("the connection closed inside the response headers")
            if len(field) > _MAX_LINE or len(headers) >= _MAX_HEADERS:
                raise HttpProtocolError("response headers too long")
            name, colon, value = field.decode("latin-1").partition(":")
            if not colon:
                raise HttpProtocolError(f"not a header line: {field[:80]!r}")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        status = int(code)
        if 100 <= status < 200:
            continue  # an interim answer (100 Continue): the real one follows
        tokens = headers.get("connection", "").lower()
        will_close = "close" in tokens or (version == "HTTP/1.0" and "keep-alive" not in tokens)
        if "transfer-encoding" not in headers and "content-length" not in headers:
            will_close = will_close or status not in (204, 304)  # the body ends at close
        return _Head(status, reason, headers, will_close)


def _body_length(head: _Head, method: str) -> int | None:
    """The body's length in bytes; None for chunked, -1 for "until the server closes"."""
    if method == "HEAD" or head.status in (204, 304):
        return 0
    encoding = head.headers.get("transfer-encoding")
    if encoding is not None:
        if encoding.lower() != "chunked":
            raise HttpProtocolError(f"unsupported Transfer-Encoding {encoding!r}")
        return None
    length = head.headers.get("content-length")
    if length is None:
        return -1
    if not length.isdigit():
        raise HttpProtocolError(f"bad Content-Length {length!r}")
    return int(length)


def _read_exactly(reader: io.BufferedReader, size: int) -> bytes:
    data = reader.read(size)
    if len(data) < size:
        raise HttpProtocolError(f"the connection closed after {len(data)} of {size} body bytes")
    return data


def _read_body(reader: io.BufferedReader, head: _Head, method: str) -> bytes:
    length = _body_length(head, method)
    if length is None:
        return b"".join(_chunks(reader))
    if length < 0:
        return reader.read()
    return _read_exactly(reader, length) if length else b""


def _chunks(reader: io.BufferedReader) -> Iterator[bytes]:
    """A chunked body's chunks, each as soon as it has arrived whole."""
    while True:
        line = reader.readline(_MAX_LINE + 1)
        if not line:
            raise HttpProtocolError("the connection closed inside a chunked body")
        size_text = line.split(b";", 1)[0].strip()
        if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
            raise HttpProtocolError(f"bad chunk size line {line[:80]!r}")
        size = int(size_text, 16)
        if size == 0:
            while reader.readline(_MAX_LINE + 1) not in (b"\r\n", b"\n", b""):
                pass  # trailer fields: none that matter here
            return
        data = _read_exactly(reader, size)
        if reader.readline(_MAX_LINE + 1) not in (b"\r\n", b"\n"):
            raise HttpProtocolError("a chunk not followed by CRLF")
        yield data


class HttpStream:
    """An answer read as it arrives, on a connection of its own (``open_stream``).

    :meth:`shutdown` may be called from another thread to end a read blocked on it promptly.
    """

    def __init__(self, connection: _Connection, head: _Head, method: str, where: str) -> None:
        self._connection = connection
        self._head = head
        self._method = method
        self._where = where
        self.status = head.status
        self.reason = head.reason
        self.headers = head.headers

    def chunks(self) -> Iterator[bytes]:
        """The body, piece by piece; a broken connection raises :class:`KubeConnectionError`."""
        reader = self._connection.reader
        try:
            length = _body_length(self._head, self._method)
            if length is None:
                yield from _chunks(reader)
            elif length < 0:
                while data := reader.read1(65536):
                    yield data
            elif length:
                yield _read_exactly(reader, length)
        except (OSError, HttpProtocolError, ValueError) as error:
            # ValueError: the reader was closed under us (shutdown then close).
            raise KubeConnectionError(f"{self._where}: {type(error).__name__}: {error}") from None

    def read(self) -> bytes:
        """The whole body (an error answer's Status)."""
        return b"".join(self.chunks())

    def shutdown(self) -> None:
        """End the stream now, from any thread: a blocked read returns."""
        self._connection.interrupt()

    def close(self) -> None:
        self._connection.close()
