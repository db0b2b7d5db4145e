"""A scripted HTTP/1.1 server on a local socket, for the transport's tests: each request gets
the next scripted reply, written in pieces, with pauses, or cut off, as a test needs."""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

# What the server does with one request: write answers on the socket; False closes it.
Reply = Callable[[socket.socket], bool]


@dataclass
class Request:
    connection: int
    line: str
    headers: dict[str, str]
    body: bytes


@dataclass
class ScriptedServer:
    """Answers each request with the next scripted reply (a plain 200 when none is left)."""

    tls: ssl.SSLContext | None = None
    replies: list[Reply] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            self._sockets.append(sock)
            thread = threading.Thread(
                target=self._serve, args=(sock, self.connections), daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket, number: int) -> None:
        try:
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_side=True)
                self._sockets.append(sock)
            reader = sock.makefile("rb")
            while True:
                line = reader.readline()
                if not line:
                    return
                headers = {}
                while (field_line := reader.readline()) not in (b"\r\n", b""):
                    name, _, value = field_line.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = reader.read(int(headers.get("content-length", "0")))
                self.requests.append(Request(number, line.decode().strip(), headers, body))
                reply = self.replies.pop(0) if self.replies else answer(200, b"{}")
                if not reply(sock):
                    return
        except OSError:
            return
        finally:
            sock.close()

    def close(self) -> None:
        """Stops accepting and serving, and waits for the server's threads to end: a test that
        counts threads (tests/unit/scheduler/runtime/test_workers.py) must not see them exit
        later, whichever test ran before it."""
        for sock in (self.listener, *self._sockets):
            # Wakes a blocked accept() or read; OSError: not connected, already closed, or
            # detached by the TLS wrapper.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for thread in self._threads:
            thread.join(timeout=5)


def answer(status: int, body: bytes, *extra: str) -> Reply:
    head = f"HTTP/1.1 {status} Whatever\r\nContent-Length: {len(body)}\r\n"
    data = (head + "".join(f"{h}\r\n" for h in extra) + "\r\n").encode() + body

    def reply(sock: socket.socket) -> bool:
        sock.sendall(data)
        return not any(h.lower() == "connection: close" for h in extra)

    return reply


def pieces(*parts: bytes, keep_open: bool = True, pause_s: float = 0.02) -> Reply:
    """Writes ``parts`` one at a time with a pause between: the client sees partial reads.

    A pause ends early when the socket turns readable: the client went away, or
    :meth:`ScriptedServer.close` shut the socket down (so a long pause never outlives the test).
    """

    def reply(sock: socket.socket) -> bool:
        for part in parts:
            sock.sendall(part)
            select.select([sock], [], [], pause_s)
        return keep_open

    return reply


def chunked(*chunks: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks) + b"0\r\n\r\n"


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
