"""gputopo.core.kube.transport, HTTP/1.1 framed by hand, against a scripted local server: bodies
by length and chunked, answers split across reads, connections the server closes, TLS server
names, and streams another thread interrupts. The agent and the scheduler both send through it."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gputopo.core.kube import MAX_IDLE_S, HttpConnections, KubeConnectionError
from tests.controlplane.certs import CertificateAuthority
from tests.unit.core.kube.scripted_http import CHUNKED_HEAD, ScriptedServer, answer, chunked, pieces


@pytest.fixture()
def server() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.close()


def connections(server: ScriptedServer) -> HttpConnections:
    return HttpConnections(f"http://127.0.0.1:{server.port}/prefix", ssl_context=None)


def test_a_request_is_one_http11_message_with_host_length_and_headers(
    server: ScriptedServer,
) -> None:
    server.replies = [answer(201, b'{"kind":"Event"}')]
    status, reason, body = connections(server).exchange(
        "POST", "/api/v1/events?x=1", b'{"a":1}', {"Authorization": "Bearer t"}
    )
    assert (status, reason, body) == (201, "Whatever", b'{"kind":"Event"}')
    (request,) = server.requests
    assert request.line == "POST /prefix/api/v1/events?x=1 HTTP/1.1"
    assert request.headers["host"] == f"127.0.0.1:{server.port}"
    assert request.headers["authorization"] == "Bearer t"
    assert request.body == b'{"a":1}'


def test_kept_alive_connections_are_reused(server: ScriptedServer) -> None:
    pool = connections(server)
    for _ in range(4):
        assert pool.exchange("GET", "/x", None, {})[0] == 200
    assert server.connections == 1


def test_a_chunked_body_split_across_reads_is_reassembled(server: ScriptedServer) -> None:
    body = chunked(b'{"kind":', b'"NodeList"', b"}")
    server.replies = [pieces(CHUNKED_HEAD[:9], CHUNKED_HEAD[9:] + body[:5], body[5:])]
    pool = connections(server)
    assert pool.exchange("GET", "/x", None, {}) == (200, "OK", b'{"kind":"NodeList"}')
    assert pool.exchange("GET", "/x", None, {})[0] == 200  # the connection stayed usable
    assert server.connections == 1


def test_a_body_by_content_length_split_across_reads(server: ScriptedServer) -> None:
    server.replies = [pieces(b"HTTP/1.1 200 OK\r\nContent-Le", b"ngth: 6\r\n\r\nab", b"cdef")]
    assert connections(server).exchange("GET", "/x", None, {})[2] == b"abcdef"


def test_connection_close_is_honoured(server: ScriptedServer) -> None:
    server.replies = [answer(200, b"{}", "Connection: close")]
    pool = connections(server)
    pool.exchange("GET", "/x", None, {})
    pool.exchange("GET", "/x", None, {})
    assert server.connections == 2  # the closed one was not put back, nor retried
    assert len(server.requests) == 2


def test_a_body_that_ends_at_close(server: ScriptedServer) -> None:
    server.replies = [pieces(b"HTTP/1.0 200 OK\r\n\r\nuntil ", b"close", keep_open=False)]
    pool = connections(server)
    assert pool.exchange("GET", "/x", None, {})[2] == b"until close"
    pool.exchange("GET", "/x", None, {})
    assert server.connections == 2


def test_an_idle_connection_the_server_closed_is_retried_once(server: ScriptedServer) -> None:
    def answer_then_close(sock: socket.socket) -> bool:
        answer(200, b"{}")(sock)
        return False  # as a load balancer that drops idle connections

    server.replies = [answer_then_close]
    pool = connections(server)
    pool.exchange("GET", "/x", None, {})
    time.sleep(0.05)
    assert pool.exchange("POST", "/y", b"{}", {})[0] == 200
    assert [r.line.split()[0] for r in server.requests] == ["GET", "POST"]  # POSTed once
    assert server.connections == 2


def test_the_retry_opens_a_fresh_connection_when_every_pooled_one_went_stale(
    server: ScriptedServer,
) -> None:
    """After a quiet spell the server may have closed *all* pooled connections (16 bind workers'
    worth): the retry must not take the next stale one."""

    def slow_answer_then_close(sock: socket.socket) -> bool:
        time.sleep(0.1)  # keeps both requests in flight: two pooled connections
        answer(200, b"{}")(sock)
        return False

    server.replies = [slow_answer_then_close, slow_answer_then_close]
    pool = connections(server)
    threads = [
        threading.Thread(target=pool.exchange, args=("GET", "/x", None, {})) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert server.connections == 2
    time.sleep(0.05)
    assert pool.exchange("POST", "/y", b"{}", {})[0] == 200
    assert server.connections == 3
    assert [r.line.split()[0] for r in server.requests].count("POST") == 1


def test_connections_idle_past_the_servers_idle_timeout_are_not_reused(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = connections(server)
    pool.exchange("GET", "/x", None, {})
    now = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: now + MAX_IDLE_S + 1)
    pool.exchange("GET", "/x", None, {})
    assert server.connections == 2  # a fresh one; the old one closed, not tried


def test_a_connection_dropped_mid_answer_is_not_retried(server: ScriptedServer) -> None:
    server.replies = [pieces(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", keep_open=False)]
    with pytest.raises(
        KubeConnectionError, match=r"^POST http://127\.0\.0\.1:\d+/prefix/y: .*3 of 10"
    ):
        connections(server).exchange("POST", "/y", b"{}", {})
    assert len(server.requests) == 1


def test_a_fresh_connection_closed_without_an_answer_is_one_line(server: ScriptedServer) -> None:
    server.replies = [pieces(keep_open=False)]
    with pytest.raises(KubeConnectionError, match="ServerDisconnected") as raised:
        connections(server).exchange("GET", "/x", None, {})
    assert "\n" not in str(raised.value)
    assert len(server.requests) == 1


def test_a_4xx_status_body_is_returned_whole(server: ScriptedServer) -> None:
    status = b'{"kind":"Status","reason":"Conflict","message":"already bound"}'
    server.replies = [answer(409, status)]
    assert connections(server).exchange("POST", "/b", b"{}", {}) == (409, "Whatever", status)


def test_a_garbled_answer_is_a_connection_error(server: ScriptedServer) -> None:
    server.replies = [pieces(b"SSH-2.0-OpenSSH\r\n\r\n", keep_open=False)]
    with pytest.raises(KubeConnectionError, match=r"not an HTTP/1\.x status line"):
        connections(server).exchange("GET", "/x", None, {})


def test_a_header_value_with_a_newline_is_refused(server: ScriptedServer) -> None:
    with pytest.raises(ValueError, match="Authorization"):
        connections(server).exchange("GET", "/x", None, {"Authorization": "a\r\nX-Evil: 1"})


def test_a_stream_yields_chunks_as_they_arrive_and_ends_with_the_body(
    server: ScriptedServer,
) -> None:
    server.replies = [pieces(CHUNKED_HEAD, chunked(b"one\n")[:-5], chunked(b"two\n"))]
    stream = connections(server).open_stream("GET", "/w", {}, timeout_s=5)
    assert stream.status == 200
    assert list(stream.chunks()) == [b"one\n", b"two\n"]
    stream.close()


def test_a_stream_the_server_cuts_is_a_connection_error(server: ScriptedServer) -> None:
    server.replies = [pieces(CHUNKED_HEAD, b"4\r\none\n\r\n", keep_open=False)]
    stream = connections(server).open_stream("GET", "/w", {}, timeout_s=5)
    received = []
    with pytest.raises(KubeConnectionError, match="closed inside a chunked body"):
        for chunk in stream.chunks():
            received.append(chunk)
    assert received == [b"one\n"]


def assert_shutdown_ends_a_blocked_read(pool: HttpConnections) -> None:
    """Open a watch the server answers with headers and then silence; another thread's
    shutdown() must end the blocked read at once."""
    stream = pool.open_stream("GET", "/w", {}, timeout_s=60)
    threading.Timer(0.1, stream.shutdown).start()
    started = time.monotonic()
    with pytest.raises(KubeConnectionError):
        list(stream.chunks())
    assert time.monotonic() - started < 5
    stream.close()


def test_shutdown_from_another_thread_ends_a_blocked_stream_read(server: ScriptedServer) -> None:
    server.replies = [pieces(CHUNKED_HEAD, pause_s=30)]  # headers, then silence
    assert_shutdown_ends_a_blocked_read(connections(server))


def _tls_server(tmp_path: Path, dns_name: str) -> tuple[ScriptedServer, ssl.SSLContext]:
    ca = CertificateAuthority.create()
    cert, key = ca.issue("apiserver", dns_names=(dns_name,), server=True)
    (tmp_path / "server.pem").write_bytes(cert + key)
    serving = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    serving.load_cert_chain(tmp_path / "server.pem")
    client = ssl.create_default_context(cadata=ca.cert_pem.decode())
    return ScriptedServer(tls=serving), client


def test_tls_verifies_the_configured_server_name(tmp_path: Path) -> None:
    server, client = _tls_server(tmp_path, "apiserver.internal")
    url = f"https://127.0.0.1:{server.port}"
    try:
        named = HttpConnections(url, ssl_context=client, tls_server_name="apiserver.internal")
        assert named.exchange("GET", "/x", None, {})[0] == 200
        assert named.exchange("GET", "/x", None, {})[0] == 200
        unnamed = HttpConnections(url, ssl_context=client)
        with pytest.raises(KubeConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            unnamed.exchange("GET", "/x", None, {})
    finally:
        server.close()


def test_shutdown_ends_a_blocked_tls_stream_read(tmp_path: Path) -> None:
    server, client = _tls_server(tmp_path, "apiserver.internal")
    server.replies = [pieces(CHUNKED_HEAD, pause_s=30)]
    try:
        pool = HttpConnections(
            f"https://127.0.0.1:{server.port}",
            ssl_context=client,
            tls_server_name="apiserver.internal",
        )
        assert_shutdown_ends_a_blocked_read(pool)
    finally:
        server.close()
