"""The one HTTP server both deployables run: ``/metrics``, ``/healthz``, ``/readyz`` (+ routes).

The agent, the scheduler's runtime and the extender all answer the probes the same way:
``/healthz`` (alias ``/livez``) and ``/readyz`` are 200 with ``ok`` when the probe passes, 503
with a one-line reason when it does not; ``/metrics`` renders the registry in whatever format the
scraper's ``Accept`` asks for (Prometheus text or OpenMetrics); anything else is a 404 naming the
paths there are. A server may add POST routes (the extender's verbs). It speaks HTTP/1.1 with
keep-alive, as kube-scheduler's extender client and Prometheus expect, from daemon threads.

Addresses are parsed by :func:`gputopo.core.address.parse_address`; the TLS context for a
server that authenticates its callers comes from :mod:`gputopo.core.tls`.

Limits (:class:`Limits`), because these ports face the network: a request's head and body must
arrive within ``read_timeout_s`` and a kept-alive connection may sit idle ``idle_timeout_s``
(a watchdog shuts the socket down when either passes, so a client that trickles one byte at a
time is dropped too); at most ``max_connections`` connections are served at once, and one more
is answered 503 and closed at once instead of costing a thread; a POST body larger than
``max_body_bytes`` is answered 413 without being read. Every error the server meets (a bad
request line, a timeout, a handler that raised) is one JSON log record through :mod:`logging`,
never a traceback on stderr. With an ``ssl.SSLContext`` the server speaks TLS; the handshake
runs in the connection's thread under the same read deadline, so a silent client cannot stall
the accept loop.
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from gputopo.core.address import parse_address
from gputopo.core.tls import common_name

log = logging.getLogger(__name__)

Probe = Callable[[], tuple[bool, str]]
# A POST route: the request body in, (HTTP status, body, content type) out.
PostRoute = Callable[[str, bytes], tuple[int, bytes, str]]
TEXT = "text/plain; charset=utf-8"
_BUSY: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 30\r\nConnection: close\r\n\r\ntoo many connections, try again\n"
)
_WATCHDOG_TICK_S: Final = 0.1
_NEXT_REQUEST: Final = "the next request"


@dataclass(frozen=True)
class Limits:
    """What one server allows a client. The defaults fit every caller gputopo has: Prometheus
    and kubelet probes send no body and keep one connection; kube-scheduler's extender client
    keeps a small pool and its largest body, an ExtenderArgs naming every node of a 5000-node
    cluster, is well under a MiB (docs/extender.md has the measurement)."""

    read_timeout_s: float = 10.0  # request head + body (and the TLS handshake)
    idle_timeout_s: float = 60.0  # a kept-alive connection between requests
    max_connections: int = 64
    max_body_bytes: int = 16 * 1024 * 1024


def always_ok() -> tuple[bool, str]:
    return True, "ok"


def check(passing: Callable[[], bool], failing_reason: str) -> Probe:
    """A probe from a yes/no check: ``ok`` or ``failing_reason``."""

    def probe() -> tuple[bool, str]:
        return (True, "ok") if passing() else (False, failing_reason)

    return probe


@dataclass
class Probes:
    """Callables behind /healthz and /readyz: each returns (ok, one-line reason)."""

    liveness: Probe = field(default=always_ok)
    readiness: Probe = field(default=always_ok)


class ProbeServer:
    """Serves ``/metrics`` (when given a registry), ``/healthz``, ``/readyz`` and any POST
    ``routes`` (matched on the last path segment, so any URL prefix works) from a thread, within
    ``limits`` and, given ``tls``, over TLS — and, given ``client_names``, only to clients whose
    certificate's subject CN is one of them."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        registry: CollectorRegistry | None = None,
        probes: Probes | None = None,
        routes: Mapping[str, PostRoute] | None = None,
        thread_name: str = "gputopo-http",
        limits: Limits | None = None,
        tls: ssl.SSLContext | None = None,
        client_names: frozenset[str] = frozenset(),
    ) -> None:
        self.registry = registry
        self.client_names = client_names  # with tls: the client CNs allowed (empty: any)
        self.probes = probes or Probes()
        self.routes = dict(routes or {})
        self.limits = limits or Limits()
        self.tls = tls
        self._thread_name = thread_name
        self._server = _Server((host, port), _handler_class(self), self.limits, tls)
        self._thread: threading.Thread | None = None

    @classmethod
    def at(
        cls,
        address: str,
        *,
        flag: str = "--metrics-address",
        registry: CollectorRegistry | None = None,
        probes: Probes | None = None,
        routes: Mapping[str, PostRoute] | None = None,
        thread_name: str = "gputopo-http",
        limits: Limits | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> ProbeServer:
        """A server bound to ``address`` (ValueError naming ``flag`` if malformed; OSError if
        the port is taken)."""
        host, port = parse_address(address, flag=flag)
        return cls(
            host,
            port,
            registry=registry,
            probes=probes,
            routes=routes,
            thread_name=thread_name,
            limits=limits,
            tls=tls,
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._server.server_address[0])
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        host = f"[{host}]" if ":" in host else host
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{host}:{self.port}"

    @property
    def connections(self) -> int:
        """Connections being served now (for tests and the cap)."""
        return self._server.active

    def paths(self) -> list[str]:
        """What GET answers, for the 404's hint."""
        return (["/metrics"] if self.registry is not None else []) + ["/healthz", "/readyz"]

    def start(self) -> ProbeServer:
        self._server.watchdog.start()
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=self._thread_name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the port (also for a server never started)."""
        if self._thread is not None:
            self._server.shutdown()  # waits for serve_forever, which only a start() runs
        self._server.server_close()
        self._server.watchdog.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ProbeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Watchdog:
    """Shuts down a connection's socket once its deadline passes: a blocked read then returns,
    however slowly the client trickles bytes (a socket timeout alone restarts on every byte)."""

    def __init__(self) -> None:
        self._deadlines: dict[socket.socket, tuple[float, str]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def arm(self, connection: socket.socket, seconds: float, waiting_for: str) -> None:
        with self._lock:
            self._deadlines[connection] = (time.monotonic() + seconds, waiting_for)

    def disarm(self, connection: socket.socket) -> None:
        with self._lock:
            self._deadlines.pop(connection, None)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="http-watchdog", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopping.wait(_WATCHDOG_TICK_S):
            now = time.monotonic()
            with self._lock:
                expired = [(c, what) for c, (at, what) in self._deadlines.items() if at <= now]
                for connection, _ in expired:
                    del self._deadlines[connection]
            for connection, waiting_for in expired:
                # An idle keep-alive closing is routine (debug); a half-sent request is not.
                level = logging.DEBUG if waiting_for == _NEXT_REQUEST else logging.INFO
                log.log(
                    level, "closing a connection: timed out", extra={"waiting_for": waiting_for}
                )
                # The plain socket's shutdown, also under TLS: SSLSocket.shutdown would drop
                # the TLS state under the reading thread's feet. OSError: already closed.
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(connection, socket.SHUT_RDWR)


class _Server(http.server.ThreadingHTTPServer):
    """A thread per connection, up to ``limits.max_connections``; beyond, 503 and close."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[http.server.BaseHTTPRequestHandler],
        limits: Limits,
        tls: ssl.SSLContext | None,
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)
        self.limits = limits
        self.watchdog = _Watchdog()
        self.active = 0
        self._active_lock = threading.Lock()
        self._last_refusal_log = 0.0
        if tls is not None:
            # The handshake waits for the connection's own thread (under the read deadline).
            self.socket = tls.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._active_lock:
            admitted = self.active < self.limits.max_connections
            if admitted:
                self.active += 1
        if not admitted:
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started (the system's limit): free the slot
            with self._active_lock:
                self.active -= 1
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.watchdog.disarm(request)
            with self._active_lock:
                self.active -= 1

    def _refuse(self, request: Any) -> None:
        """503 without a thread: one non-blocking write (plain HTTP only; a TLS client would
        need a handshake first, which is what the cap saves), then close."""
        if not isinstance(request, ssl.SSLSocket):
            try:
                request.setblocking(False)
                request.send(_BUSY)
            except OSError:
                pass
        self.shutdown_request(request)
        now = time.monotonic()
        if now - self._last_refusal_log >= 10.0:  # a flood logs once per 10 s, not per try
            self._last_refusal_log = now
            log.warning(
                "refusing a connection: too many open",
                extra={"max_connections": self.limits.max_connections},
            )

    def handle_error(self, request: Any, client_address: Any) -> None:
        """What socketserver would print to stderr as a traceback, as one log record: a client's
        doing (a refused certificate, a hang-up, a deadline) in one line, a bug with its
        traceback inside the JSON record."""
        error = sys.exc_info()[1]
        if isinstance(error, ssl.SSLError | ConnectionError | TimeoutError):
            log.info(
                "connection closed",
                extra={"client": str(client_address[0]), "reason": str(error)},
            )
            return
        log.error("serving a connection failed", exc_info=True)


def _handler_class(server: ProbeServer) -> type[http.server.BaseHTTPRequestHandler]:
    limits = server.limits

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: every answer carries a Content-Length
        disable_nagle_algorithm = True  # headers and body are two writes
        timeout = limits.read_timeout_s  # any one read or write; the watchdog bounds the sum

        @property
        def _watchdog(self) -> _Watchdog:
            return self.server.watchdog  # type: ignore[attr-defined, no-any-return]

        def setup(self) -> None:
            super().setup()
            if isinstance(self.connection, ssl.SSLSocket):
                self._watchdog.arm(self.connection, limits.read_timeout_s, "TLS handshake")
                try:
                    self.connection.do_handshake()
                finally:
                    self._watchdog.disarm(self.connection)
                name = common_name(self.connection.getpeercert())
                if server.client_names and name not in server.client_names:
                    # Signed by the client CA, but not a caller this server serves.
                    raise ConnectionRefusedError(f"client certificate CN {name!r} not allowed")

        def handle(self) -> None:
            try:
                super().handle()
            except (ssl.SSLError, ConnectionError, TimeoutError) as error:
                # A refused certificate, a client gone, a deadline passed: the client's doing.
                log.info(
                    "connection closed",
                    extra={"client": self.address_string(), "reason": str(error)},
                )

        def finish(self) -> None:
            with contextlib.suppress(OSError):  # the peer is gone; nothing to flush to it
                super().finish()

        def handle_one_request(self) -> None:
            self._watchdog.arm(self.connection, limits.idle_timeout_s, _NEXT_REQUEST)
            try:
                super().handle_one_request()
            finally:
                self._watchdog.disarm(self.connection)

        def parse_request(self) -> bool:
            # The request line is in: from here the head and body have read_timeout_s.
            self._watchdog.arm(self.connection, limits.read_timeout_s, "the request")
            return super().parse_request()

        def do_GET(self) -> None:
            self._watchdog.disarm(self.connection)
            path = self.path.split("?", 1)[0]
            if path == "/metrics" and server.registry is not None:
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                try:
                    body = encoder(server.registry)
                except Exception as error:  # a bug in collect() must not kill the server
                    log.exception("rendering /metrics failed")
                    self._reply(500, f"collect failed: {error}\n".encode(), TEXT)
                    return
                self._reply(200, body, content_type)
            elif path in ("/healthz", "/livez"):
                self._probe(server.probes.liveness)
            elif path == "/readyz":
                self._probe(server.probes.readiness)
            else:
                hint = ", ".join(server.paths())
                self._reply(404, f"not found: try {hint}\n".encode(), TEXT)

        def do_POST(self) -> None:
            name = self.path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
            route = server.routes.get(name)
            if route is None:  # answered before the body is read: a server without routes
                self._watchdog.disarm(self.connection)  # reads no POST body at all
                expected = ", ".join(server.routes) or "nothing"
                self._refuse_body(404, f"unknown path: POST serves {expected}")
                return
            raw = self._body()
            self._watchdog.disarm(self.connection)
            if raw is None:
                return
            try:
                status, body, content_type = route(name, raw)
            except Exception as error:  # a bug in one route must not drop the connection
                log.exception("POST route raised", extra={"path": self.path})
                status, body, content_type = 500, f"{type(error).__name__}\n".encode(), TEXT
            self._reply(status, body, content_type)

        def _body(self) -> bytes | None:
            """The POST body, or None once an error is answered: a body is sized by
            Content-Length only (no chunked encoding), and one over the limit is refused
            before a byte of it is read."""
            if self.headers.get("Transfer-Encoding"):
                self._refuse_body(411, "send a Content-Length, not Transfer-Encoding")
                return None
            text = (self.headers.get("Content-Length") or "0").strip()
            if not text.isdigit():
                self._refuse_body(400, f"Content-Length {text[:40]!r}: expected bytes")
                return None
            length = int(text)
            if length > limits.max_body_bytes:
                log.warning(
                    "refusing a request body: too large",
                    extra={"bytes": length, "max_body_bytes": limits.max_body_bytes},
                )
                self._refuse_body(413, f"body of {length} bytes over {limits.max_body_bytes}")
                return None
            raw = self.rfile.read(length)
            if len(raw) < length:
                self.close_connection = True
                return None
            return raw

        def _refuse_body(self, status: int, reason: str) -> None:
            self.close_connection = True  # the unread body must not be taken for a request
            self._reply(status, (reason + "\n").encode(), TEXT, close=True)

        def _probe(self, probe: Probe) -> None:
            try:
                ok, reason = probe()
            except Exception as error:  # a probe that raises is a failing probe, not a 500
                log.exception("probe %s raised", self.path)
                ok, reason = False, f"probe raised {type(error).__name__}: {error}"
            self._reply(200 if ok else 503, (reason + "\n").encode(), TEXT)

        def _reply(self, status: int, body: bytes, content_type: str, close: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if close:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("%s " + format, self.address_string(), *args)

        def log_error(self, format: str, *args: object) -> None:
            # BaseHTTPRequestHandler's default writes plain text to stderr.
            log.info(format, *args, extra={"client": self.address_string()})

    return Handler
