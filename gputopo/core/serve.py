"""The one HTTP server both deployables run: ``/metrics``, ``/healthz``, ``/readyz`` (+ routes).

The agent, the scheduler's runtime and the extender all answer the probes the same way:
``/healthz`` (alias ``/livez``) and ``/readyz`` are 200 with ``ok`` when the probe passes, 503
with a one-line reason when it does not; ``/metrics`` renders the registry in whatever format the
scraper's ``Accept`` asks for (Prometheus text or OpenMetrics); anything else is a 404 naming the
paths there are. A server may add POST routes (the extender's verbs). It speaks HTTP/1.1 with
keep-alive, as kube-scheduler's extender client and Prometheus expect, from daemon threads.

Addresses are ``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (all interfaces), parsed by
:func:`parse_address`, which names the flag in its error.
"""

from __future__ import annotations

import http.server
import ipaddress
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

log = logging.getLogger(__name__)

Probe = Callable[[], tuple[bool, str]]
# A POST route: the request body in, (HTTP status, body, content type) out.
PostRoute = Callable[[str, bytes], tuple[int, bytes, str]]
TEXT = "text/plain; charset=utf-8"


def parse_address(
    text: str, *, flag: str = "--metrics-address", example: str = "0.0.0.0:9465"
) -> tuple[str, int]:
    """``HOST:PORT``, ``[::1]:PORT`` or ``:PORT`` (all interfaces) -> (host, port).

    HOST is an IPv4 literal, a bracketed IPv6 literal or a DNS host name (RFC 1123); PORT is
    0..65535 (0: any free port). ValueError names ``flag``, says what is wrong and shows
    ``example`` for anything else (``:99999``, ``256.1.1.1:1``, ``[::1``)."""
    host, separator, port_text = text.rpartition(":")
    problem = None
    if not separator or not port_text.isascii() or not port_text.isdigit():
        problem = "no port"
    elif len(port_text) > 5 or int(port_text) > 65535:
        problem = "port out of range 0..65535"
    else:
        problem = _host_problem(host)
    if problem is not None:
        shown = repr(text) if len(text) <= 80 else repr(text[:80]) + "..."
        raise ValueError(f"{flag} {shown}: expected HOST:PORT or :PORT, e.g. {example} ({problem})")
    return (host.strip("[]") or "0.0.0.0", int(port_text))


_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _host_problem(host: str) -> str | None:
    """Why ``host`` is not an address to listen on, or None ("" is every interface)."""
    if not host:
        return None
    if host.startswith("[") or host.endswith("]") or ":" in host:
        inner = host[1:-1] if host.startswith("[") and host.endswith("]") else None
        if inner is None and (host.startswith("[") or host.endswith("]")):
            return "unbalanced brackets around an IPv6 address"
        if inner is None:
            return "an IPv6 address goes in brackets, e.g. [::1]:9465"
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            return f"{inner!r} is not an IPv6 address"
        return None
    if all(part.isdigit() for part in host.split(".")):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"{host!r} is not an IPv4 address"
        return None
    labels = host.removesuffix(".").split(".")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        return "the host is not an IP address or a host name"
    return None


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
    ``routes`` (matched on the last path segment, so any URL prefix works) from a thread."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        registry: CollectorRegistry | None = None,
        probes: Probes | None = None,
        routes: Mapping[str, PostRoute] | None = None,
        thread_name: str = "gputopo-http",
    ) -> None:
        self.registry = registry
        self.probes = probes or Probes()
        self.routes = dict(routes or {})
        self._thread_name = thread_name
        self._server = http.server.ThreadingHTTPServer((host, port), _handler_class(self))
        self._server.daemon_threads = True
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
    ) -> ProbeServer:
        """A server bound to ``address`` (ValueError naming ``flag`` if malformed; OSError if
        the port is taken)."""
        host, port = parse_address(address, flag=flag)
        return cls(
            host, port, registry=registry, probes=probes, routes=routes, thread_name=thread_name
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._server.server_address[0])
        host = "127.0.0.1" if host == "0.0.0.0" else host
        return f"http://{host}:{self.port}"

    def paths(self) -> list[str]:
        """What GET answers, for the 404's hint."""
        return (["/metrics"] if self.registry is not None else []) + ["/healthz", "/readyz"]

    def start(self) -> ProbeServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=self._thread_name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ProbeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _handler_class(server: ProbeServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: every answer carries a Content-Length
        disable_nagle_algorithm = True  # headers and body are two writes

        def do_GET(self) -> None:
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
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            name = self.path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
            route = server.routes.get(name)
            if route is None:
                expected = ", ".join(server.routes) or "nothing"
                self._reply(404, f"unknown path: POST serves {expected}\n".encode(), TEXT)
                return
            status, body, content_type = route(name, raw)
            self._reply(status, body, content_type)

        def _probe(self, probe: Probe) -> None:
            try:
                ok, reason = probe()
            except Exception as error:  # a probe that raises is a failing probe, not a 500
                log.exception("probe %s raised", self.path)
                ok, reason = False, f"probe raised {type(error).__name__}: {error}"
            self._reply(200 if ok else 503, (reason + "\n").encode(), TEXT)

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("%s " + format, self.address_string(), *args)

    return Handler
