"""The scheduler's KubeApi: kept-alive connections, one retry on a stale one, errors, watches,
and the kubeconfig policy it shares with the agent."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml

from gputopo.core.kube import CachedAuthorization, KubeConfigError, load_config
from gputopo.scheduler.runtime.kube import KubeApi, KubeApiError, _authorization, load_kube_api
from tests.unit.core.kube.scripted_http import CHUNKED_HEAD, ScriptedServer, answer, chunked, pieces

REPO = Path(__file__).resolve().parents[4]


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


def test_a_configuration_with_a_proxy_is_refused_not_sent_around_it() -> None:
    configuration = kubernetes.client.Configuration()
    configuration.host = "http://127.0.0.1:1"
    configuration.proxy = "http://proxy.example:3128"
    api = KubeApi(kubernetes.client.ApiClient(configuration))
    with pytest.raises(KubeConfigError, match="a proxy is not supported"):
        api.request("GET", "/version")


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
    configuration = _configuration_with_hook(hook, "http://127.0.0.1:1")
    authorization = CachedAuthorization(
        lambda: _authorization(configuration), ttl_s=1.0, clock=lambda: now[0]
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


@pytest.fixture()
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.close()


def _scripted_api(server: ScriptedServer) -> KubeApi:
    configuration = kubernetes.client.Configuration()
    configuration.host = f"http://127.0.0.1:{server.port}"
    configuration.api_key = {"authorization": "s3cret"}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    return KubeApi(kubernetes.client.ApiClient(configuration))


def _event(name: str) -> bytes:
    return json.dumps({"type": "ADDED", "object": {"metadata": {"name": name}}}).encode() + b"\n"


def test_a_watch_line_split_across_chunks_is_one_event(scripted: ScriptedServer) -> None:
    first, second = _event("a"), _event("b")
    body = chunked(first[:7], first[7:] + second[:3], second[3:])
    scripted.replies = [pieces(CHUNKED_HEAD, body[:20], body[20:])]
    events = list(_scripted_api(scripted).stream_lines("/api/v1/pods", {"watch": True}, 5))
    assert [e["object"]["metadata"]["name"] for e in events] == ["a", "b"]
    (request,) = scripted.requests
    assert request.line == "GET /api/v1/pods?watch=true HTTP/1.1"
    assert request.headers["authorization"] == "Bearer s3cret"


def test_a_watch_the_server_cuts_raises_after_the_events_it_sent(scripted: ScriptedServer) -> None:
    scripted.replies = [
        pieces(CHUNKED_HEAD, chunked(_event("a"))[:-5], keep_open=False)  # no last chunk
    ]
    received = []
    with pytest.raises(OSError, match="closed inside a chunked body"):
        for event in _scripted_api(scripted).stream_lines("/api/v1/pods", {}, 5):
            received.append(event["object"]["metadata"]["name"])
    assert received == ["a"]


def test_a_watch_refused_with_a_status_raises_it(scripted: ScriptedServer) -> None:
    gone = b'{"kind":"Status","reason":"Expired","message":"too old","code":410}'
    scripted.replies = [answer(410, gone)]
    with pytest.raises(KubeApiError, match="HTTP 410 Expired: too old") as raised:
        list(_scripted_api(scripted).stream_lines("/api/v1/pods", {}, 5))
    assert raised.value.status == 410


def test_shutdown_through_on_open_ends_a_blocked_watch(scripted: ScriptedServer) -> None:
    scripted.replies = [pieces(CHUNKED_HEAD + chunked(_event("a"))[:-5], pause_s=30)]
    opened: list[Any] = []
    received = []
    stream = _scripted_api(scripted).stream_lines("/api/v1/pods", {}, 60, on_open=opened.append)
    started = time.monotonic()
    with pytest.raises(OSError):
        for event in stream:
            received.append(event["object"]["metadata"]["name"])
            threading.Timer(0.1, opened[0].shutdown).start()  # as Reflector.stop() does
    assert received == ["a"]
    assert time.monotonic() - started < 5


def _kubeconfig(path: Path, server: str, user: dict[str, Any]) -> str:
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(yaml.safe_dump(document))
    return str(path)


def test_a_token_kubeconfig_is_served_without_importing_the_official_client(
    tmp_path: Path,
) -> None:
    path = _kubeconfig(tmp_path / "config", "https://127.0.0.1:1", {"token": "t"})
    script = f"""
import sys
from gputopo.scheduler.runtime.kube import load_kube_api
api = load_kube_api({path!r})
assert api.client is not None
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("kubernetes", "urllib3"))
assert not loaded, loaded
"""
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_a_rotated_token_file_is_sent_after_the_ttl(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("one\n")
    config = load_config(
        _kubeconfig(
            tmp_path / "config", f"http://127.0.0.1:{scripted.port}", {"tokenFile": str(token_file)}
        )
    )
    api = KubeApi.from_cluster_config(config, authorization_ttl_s=0.0)
    api.request("GET", "/api/v1/nodes")
    token_file.write_text("two\n")
    api.request("GET", "/api/v1/nodes")
    assert [r.headers["authorization"] for r in scripted.requests] == ["Bearer one", "Bearer two"]


def test_an_exec_plugin_kubeconfig_is_refused_as_the_agent_refuses_it(tmp_path: Path) -> None:
    """One kubeconfig policy for both deployables: no credential plugin runs."""
    exec_user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "true"}}
    path = _kubeconfig(tmp_path / "config", "https://127.0.0.1:1", exec_user)
    with pytest.raises(KubeConfigError, match="exec credential plugin") as raised:
        load_kube_api(path)
    assert str(raised.value).startswith(f"kubeconfig {path!r}: user 'u' authenticates with")


def test_the_context_picks_the_server_and_user(scripted: ScriptedServer, tmp_path: Path) -> None:
    document = {
        "clusters": [
            {"name": "c", "cluster": {"server": "https://127.0.0.1:1"}},
            {"name": "local", "cluster": {"server": f"http://127.0.0.1:{scripted.port}"}},
        ],
        "users": [{"name": "u", "user": {"token": "a"}}, {"name": "v", "user": {"token": "b"}}],
        "contexts": [
            {"name": "x", "context": {"cluster": "c", "user": "u"}},
            {"name": "y", "context": {"cluster": "local", "user": "v"}},
        ],
        "current-context": "x",
    }
    (tmp_path / "config").write_text(yaml.safe_dump(document))
    load_kube_api(str(tmp_path / "config"), context="y").request("GET", "/api/v1/nodes")
    assert [r.headers["authorization"] for r in scripted.requests] == ["Bearer b"]


def test_an_unreadable_kubeconfig_keeps_the_one_line_error() -> None:
    with pytest.raises(ValueError, match=r"^kubeconfig '/nonexistent/kubeconfig': cannot read"):
        load_kube_api("/nonexistent/kubeconfig")
