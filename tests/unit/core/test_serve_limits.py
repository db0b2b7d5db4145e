"""The probe server's limits: what a slow, idle, greedy or malformed client costs it."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest

from gputopo.core.logs import logging_configured
from gputopo.core.serve import Limits, ProbeServer
from gputopo.scheduler.extender import Extender, ExtenderServer
from gputopo.scheduler.runtime.core_adapter import CoreFramework
from tests.polling import eventually


def _connect(server: ProbeServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=5)


def _closed_by_server(sock: socket.socket, within_s: float) -> bytes:
    """Everything the server sent until it closed the connection (fails after ``within_s``)."""
    sock.settimeout(within_s)
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def _healthz(server: ProbeServer) -> bytes:
    with urllib.request.urlopen(server.url + "/healthz", timeout=5) as response:
        body: bytes = response.read()
        return body


@pytest.fixture
def capped() -> Iterator[ProbeServer]:
    with ProbeServer("127.0.0.1", 0, limits=Limits(max_connections=8)) as server:
        yield server


def test_150_idle_connections_do_not_cost_150_threads(capped: ProbeServer) -> None:
    before = threading.active_count()
    sockets = [_connect(capped) for _ in range(150)]
    try:
        eventually(lambda: capped.connections == 8, 5, "the cap's 8 connections served")
        assert threading.active_count() - before <= 8
        # The ones over the cap were answered 503 at once and closed, without a thread.
        refused = [_closed_by_server(sock, 5) for sock in sockets[8:]]
        assert all(answer.startswith(b"HTTP/1.1 503 ") for answer in refused)
    finally:
        for sock in sockets:
            sock.close()
    eventually(lambda: capped.connections == 0, 5, "the held connections released")
    assert _healthz(capped) == b"ok\n"


def test_a_slow_loris_half_request_is_closed_after_the_read_timeout() -> None:
    limits = Limits(read_timeout_s=0.5, idle_timeout_s=30)
    with ProbeServer("127.0.0.1", 0, limits=limits) as server, _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        started = time.monotonic()
        # One header byte every 0.1 s: each read succeeds, the request never completes.
        with pytest.raises(OSError):
            for byte in b"X-Slow: " + b"a" * 100:
                sock.sendall(bytes([byte]))
                time.sleep(0.1)
        assert time.monotonic() - started < 3
        eventually(lambda: server.connections == 0, 5, "the connection's thread freed")


def test_an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() -> None:
    limits = Limits(read_timeout_s=5, idle_timeout_s=0.5)
    with ProbeServer("127.0.0.1", 0, limits=limits) as server, _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        answer = _closed_by_server(sock, 5)
        assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"\r\n\r\nok\n")
        assert 0.4 < time.monotonic() - started < 3


def test_a_200_mb_body_is_refused_before_it_is_sent() -> None:
    server = ExtenderServer("127.0.0.1:0", Extender(CoreFramework()))
    with server, _connect(server) as sock:
        sock.sendall(
            b"POST /gputopo/filter HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 209715200\r\n\r\n" + b"[" * 65536
        )
        answer = _closed_by_server(sock, 5)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"body of 209715200 bytes over 16777216" in answer


def test_a_body_the_server_has_no_route_for_is_not_read() -> None:
    with ProbeServer("127.0.0.1", 0) as server, _connect(server) as sock:
        sock.sendall(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n")
        assert _closed_by_server(sock, 5).startswith(b"HTTP/1.1 404 ")


def test_chunked_or_malformed_lengths_are_refused() -> None:
    server = ExtenderServer("127.0.0.1:0", Extender(CoreFramework()))
    with server:
        for header, status in (
            (b"Transfer-Encoding: chunked", b"411"),
            (b"Content-Length: -5", b"400"),
            (b"Content-Length: 1e9", b"400"),
        ):
            with _connect(server) as sock:
                sock.sendall(b"POST /gputopo/filter HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n\r\n")
                assert _closed_by_server(sock, 5).startswith(b"HTTP/1.1 " + status)


def test_a_legitimate_5000_node_extender_args_fits_the_body_limit() -> None:
    names = [f"gpu-node-{'x' * 240}-{index:05d}" for index in range(5000)]  # 253-char names
    pod = {"metadata": {"name": "job", "namespace": "default", "uid": "u"}, "spec": {}}
    body = json.dumps({"Pod": pod, "NodeNames": names}).encode()
    assert len(body) < Limits().max_body_bytes / 8
    server = ExtenderServer("127.0.0.1:0", Extender(CoreFramework()))
    with server:
        request = urllib.request.Request(server.url + "/gputopo/filter", data=body)
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())
    assert len(answer["FailedNodes"]) == 5000


def test_deeply_nested_json_is_a_400_on_a_connection_that_stays_open() -> None:
    server = ExtenderServer("127.0.0.1:0", Extender(CoreFramework()))
    with server, _connect(server) as sock:
        for depth, reason in (
            (100, b': nested deeper than 64 levels"}'),
            (100_000, b"filter: request body: not valid JSON: maximum recursion depth"),
        ):  # the same kept-alive connection answers both
            nested = b"[" * depth + b"]" * depth
            sock.sendall(
                b"POST /gputopo/filter HTTP/1.1\r\nHost: x\r\nContent-Length: "
                + str(len(nested)).encode()
                + b"\r\n\r\n"
                + nested
            )
            head = b""
            while b'"}' not in head:
                head += sock.recv(65536)
            assert head.startswith(b"HTTP/1.1 400 ")
            assert reason in head


def test_errors_are_json_log_lines_never_a_traceback(capfd: pytest.CaptureFixture[str]) -> None:
    def broken(verb: str, raw: bytes) -> tuple[int, bytes, str]:
        raise RuntimeError("a bug in a route")

    limits = Limits(read_timeout_s=0.3)
    with (
        logging_configured("json", "debug"),
        ProbeServer("127.0.0.1", 0, routes={"boom": broken}, limits=limits) as server,
    ):
        for garbage in (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # TLS to plain HTTP
            b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",  # a request line too long
            b"GET /healthz HTTP/1.1\r\n",  # half a request, timed out
        ):
            with _connect(server) as sock:
                sock.sendall(garbage)
                _closed_by_server(sock, 5)
        with _connect(server) as sock:
            sock.sendall(b"POST /boom HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            assert sock.recv(65536).startswith(b"HTTP/1.1 500 ")
    err = capfd.readouterr().err
    lines = err.splitlines()
    assert lines, "nothing logged"
    assert "Traceback (most recent call last)" not in "\n".join(
        line for line in lines if not line.startswith("{")
    )
    entries = [json.loads(line) for line in lines]  # every line is a JSON object
    messages = {entry["msg"] for entry in entries}
    assert "POST route raised" in messages
    assert any("timed out" in entry["msg"] for entry in entries)
