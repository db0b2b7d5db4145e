"""The one probe + metrics server: the agent, the scheduler and the extender answer alike."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from gputopo.core.address import parse_address
from gputopo.core.serve import Probes, ProbeServer, check
from gputopo.scheduler.extender import Extender, ExtenderServer
from gputopo.scheduler.runtime.core_adapter import CoreFramework
from gputopo.scheduler.runtime.metrics import HealthServer, RuntimeState, SchedulerMetrics
from gputopo.scheduler.runtime.queue import QueueDepth


def _get(url: str, accept: str = "") -> tuple[int, bytes, str]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read(), response.headers["Content-Type"]
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers["Content-Type"]


def test_address_forms() -> None:
    assert parse_address("0.0.0.0:9465") == ("0.0.0.0", 9465)
    assert parse_address(":9465") == ("0.0.0.0", 9465)
    assert parse_address("[::1]:9465") == ("::1", 9465)
    with pytest.raises(ValueError, match=r"^--metrics-address '9465': expected HOST:PORT"):
        parse_address("9465")
    with pytest.raises(ValueError, match=r"^--listen 'x:99999': expected HOST:PORT or :PORT"):
        parse_address("x:99999", flag="--listen")


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("gputopo_test_things", "Things.", registry=registry).inc()
    return registry


def test_probes_answer_ok_or_a_one_line_reason() -> None:
    healthy = {"ok": True}
    probes = Probes(
        liveness=check(lambda: healthy["ok"], "unhealthy: the loop stopped"),
        readiness=lambda: (False, "first discovery not finished"),
    )
    with ProbeServer("127.0.0.1", 0, registry=_registry(), probes=probes) as server:
        assert _get(server.url + "/healthz")[:2] == (200, b"ok\n")
        assert _get(server.url + "/livez")[:2] == (200, b"ok\n")
        assert _get(server.url + "/readyz")[:2] == (503, b"first discovery not finished\n")
        healthy["ok"] = False
        assert _get(server.url + "/healthz")[:2] == (503, b"unhealthy: the loop stopped\n")
        status, body, _ = _get(server.url + "/nowhere")
        assert (status, body) == (404, b"not found: try /metrics, /healthz, /readyz\n")


def test_metrics_follow_the_scrapers_accept_header() -> None:
    with ProbeServer("127.0.0.1", 0, registry=_registry()) as server:
        status, body, content_type = _get(server.url + "/metrics")
        assert status == 200 and content_type.startswith("text/plain")
        assert b"gputopo_test_things_total 1.0" in body
        openmetrics = "application/openmetrics-text; version=1.0.0"
        _, body, content_type = _get(server.url + "/metrics", accept=openmetrics)
        assert content_type.startswith("application/openmetrics-text")
        assert body.endswith(b"# EOF\n")


def test_a_probe_that_raises_is_a_failing_probe() -> None:
    def broken() -> tuple[bool, str]:
        raise RuntimeError("lock poisoned")

    with ProbeServer("127.0.0.1", 0, probes=Probes(readiness=broken)) as server:
        status, body, _ = _get(server.url + "/readyz")
        assert status == 503 and b"RuntimeError: lock poisoned" in body
        assert _get(server.url + "/metrics")[0] == 404  # no registry, no /metrics


@pytest.fixture
def scheduler_servers() -> Iterator[dict[str, ProbeServer]]:
    state = RuntimeState(QueueDepth(0, 0, 0, 0), leader=True, assumed_pods=0, nodes=0)
    ready = {"ok": False}

    def is_ready() -> bool:
        return ready["ok"]

    servers: dict[str, ProbeServer] = {
        "scheduler": HealthServer(
            "127.0.0.1:0", SchedulerMetrics(lambda: state), lambda: True, is_ready
        ),
        "extender": ExtenderServer("127.0.0.1:0", Extender(CoreFramework()), ready=is_ready),
    }
    for server in servers.values():
        server.start()
    try:
        yield servers
        ready["ok"] = True
        for server in servers.values():
            assert _get(server.url + "/readyz")[:2] == (200, b"ok\n")
    finally:
        for server in servers.values():
            server.stop()


@pytest.mark.parametrize("which", ["scheduler", "extender"])
def test_the_scheduler_and_the_extender_answer_probes_as_the_agent_does(
    scheduler_servers: dict[str, ProbeServer], which: str
) -> None:
    server = scheduler_servers[which]
    assert isinstance(server, ProbeServer)
    assert _get(server.url + "/healthz")[:2] == (200, b"ok\n")
    status, body, content_type = _get(server.url + "/readyz")
    assert status == 503 and body.startswith(b"not ready: ") and body.count(b"\n") == 1
    assert content_type.startswith("text/plain")


def test_a_bad_address_names_the_flag() -> None:
    with pytest.raises(ValueError, match=r"^--listen 'nowhere'"):
        ExtenderServer("nowhere", Extender(CoreFramework()))
    metrics = SchedulerMetrics(
        lambda: RuntimeState(QueueDepth(0, 0, 0, 0), leader=False, assumed_pods=0, nodes=0)
    )
    with pytest.raises(ValueError, match=r"^--metrics-address 'nowhere'"):
        HealthServer("nowhere", metrics, lambda: True, lambda: True)
