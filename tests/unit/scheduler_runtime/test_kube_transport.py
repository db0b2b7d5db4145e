"""The runtime's lean HTTP path: kept-alive connections, one retry on a stale one, errors."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import kubernetes.client
import pytest

from scheduler.runtime.kube import CachedAuthorization, KubeApi, KubeApiError


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server: _Server

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.server.bodies.append(self.rfile.read(length))
        self._answer()

    def _answer(self) -> None:
        self.server.seen.append((self.command, self.path, dict(self.headers)))
        self.server.client_ports.append(self.client_address[1])
        status, payload = self.server.answers.pop(0) if self.server.answers else (200, {})
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        if self.server.drop_after_answer:
            self.close_connection = True  # the server closes a connection it kept alive

    def log_message(self, *_: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.bodies: list[bytes] = []
        self.client_ports: list[int] = []
        self.answers: list[tuple[int, dict[str, Any]]] = []
        self.drop_after_answer = False


@pytest.fixture()
def server() -> Iterator[_Server]:
    server = _Server()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _api(server: _Server, token: str = "s3cret") -> KubeApi:
    configuration = kubernetes.client.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    configuration.api_key = {"authorization": token}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    return KubeApi(kubernetes.client.ApiClient(configuration))


def test_requests_carry_auth_query_and_json_body(server: _Server) -> None:
    server.answers = [(201, {"kind": "Binding"})]
    api = _api(server)
    answer = api.request(
        "POST", "/api/v1/namespaces/a/pods/p/binding", query={"dryRun": "All", "x": True},
        body={"target": {"name": "n"}},
    )  # fmt: skip
    method, path, headers = server.seen[0]
    assert (method, path) == ("POST", "/api/v1/namespaces/a/pods/p/binding?dryRun=All&x=true")
    assert headers["Authorization"] == "Bearer s3cret"
    assert headers["Content-Type"] == "application/json"
    assert json.loads(server.bodies[0]) == {"target": {"name": "n"}}
    assert answer == {"kind": "Binding"}


def test_connections_are_kept_alive(server: _Server) -> None:
    api = _api(server)
    for _ in range(5):
        api.request("GET", "/api/v1/nodes")
    assert len(server.client_ports) == 5
    assert len(set(server.client_ports)) == 1  # one connection, reused


def test_a_stale_kept_alive_connection_is_retried_once_on_a_fresh_one(server: _Server) -> None:
    api = _api(server)
    server.drop_after_answer = True
    api.request("GET", "/api/v1/nodes")  # the server closes this connection after answering
    server.answers = [(200, {"kind": "NodeList"})]
    assert api.request("GET", "/api/v1/nodes") == {"kind": "NodeList"}
    assert len(server.seen) == 2  # the retry reached the server once
    assert len(set(server.client_ports)) == 2


def test_non_2xx_raises_with_the_status_reason_and_message(server: _Server) -> None:
    server.answers = [(409, {"kind": "Status", "reason": "Conflict", "message": "already bound"})]
    with pytest.raises(KubeApiError, match="HTTP 409 Conflict: already bound") as raised:
        _api(server).request("POST", "/api/v1/namespaces/a/pods/p/binding", body={})
    assert raised.value.status == 409


def test_decode_false_skips_the_answer(server: _Server) -> None:
    server.answers = [(201, {"kind": "Event"})]
    assert _api(server).request("POST", "/x", body={}, decode=False) == {}


def test_an_unreachable_server_is_an_os_error() -> None:
    configuration = kubernetes.client.Configuration()
    configuration.host = "http://127.0.0.1:1"
    with pytest.raises(OSError):
        KubeApi(kubernetes.client.ApiClient(configuration)).request("GET", "/version")


def test_a_configuration_with_a_proxy_uses_the_client_transport() -> None:
    configuration = kubernetes.client.Configuration()
    configuration.host = "http://127.0.0.1:1"
    configuration.proxy = "http://proxy.example:3128"
    api = KubeApi(kubernetes.client.ApiClient(configuration))
    assert api._transport() is None


class _RotatingToken:
    """A refresh hook like the in-cluster one: it puts the current token file's value in."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.calls = 0

    def __call__(self, configuration: Any) -> None:
        self.calls += 1
        configuration.api_key = {"authorization": self.token}


def _configuration_with_hook(hook: _RotatingToken, host: str) -> Any:
    configuration: Any = kubernetes.client.Configuration()
    configuration.host = host
    configuration.api_key_prefix = {"authorization": "Bearer"}
    configuration.refresh_api_key_hook = hook
    hook(configuration)
    return configuration


def test_a_rotated_token_is_sent_once_the_authorization_ttl_has_passed() -> None:
    hook = _RotatingToken("first")
    now = [100.0]
    authorization = CachedAuthorization(
        _configuration_with_hook(hook, "http://127.0.0.1:1"), ttl_s=1.0, clock=lambda: now[0]
    )
    assert authorization() == "Bearer first"
    hook.token = "second"  # the kubelet rotated the bound token
    now[0] += 0.5
    assert authorization() == "Bearer first"
    now[0] += 0.6
    assert authorization() == "Bearer second"


def test_the_refresh_hook_is_not_run_for_every_request(server: _Server) -> None:
    hook = _RotatingToken("s3cret")
    configuration = _configuration_with_hook(hook, f"http://127.0.0.1:{server.server_address[1]}")
    api = KubeApi(kubernetes.client.ApiClient(configuration))
    hook.calls = 0
    for _ in range(20):
        api.request("GET", "/api/v1/nodes")
    assert hook.calls <= 2  # once, or twice if the 1 s TTL lapsed mid-loop
    assert all(headers["Authorization"] == "Bearer s3cret" for _, _, headers in server.seen)
