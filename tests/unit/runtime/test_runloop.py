"""``gputopo-agent run``'s plumbing around the loop (agent/runloop.py): the probe and metrics
server, flags and their environment twins, addresses, JSON log lines, and ``run_agent`` end to
end on the real clock."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest

from gputopo.agent.loop import Agent, RunLoopConfig
from gputopo.agent.runloop import (
    JsonFormatter,
    add_arguments,
    env_name,
    parse_address,
    serve,
)
from tests.polling import eventually

from .agent_loop import CountingDiscoverer, running
from .fake_clock import FakeClock


def test_probes_over_http(discoverer: CountingDiscoverer, clock: FakeClock) -> None:
    config = RunLoopConfig(interval_s=3600, health_interval_s=0.25, udev=False)
    agent = Agent(discoverer, publisher=None, config=config, clock=clock)
    server = serve(agent, "127.0.0.1:0", registry_version="test")
    try:
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(server.url + "/readyz", timeout=5)
        assert not_ready.value.code == 503
        assert b"first discovery" in not_ready.value.read()
        with running(agent, clock):
            assert agent.cycles == 1
            for path in ("/healthz", "/readyz"):
                with urllib.request.urlopen(server.url + path, timeout=5) as response:
                    assert response.status == 200
            with urllib.request.urlopen(server.url + "/metrics", timeout=5) as response:
                body = response.read().decode()
            assert "gputopo_nvml_up 0.0" in body
            assert "gputopo_agent_discoveries_total" in body
            assert "gputopo_podresources_up 0.0" in body
    finally:
        server.stop()


def test_flags_default_to_their_environment_twins(monkeypatch: pytest.MonkeyPatch) -> None:
    assert env_name("--metrics-address") == "GPUTOPO_METRICS_ADDRESS"
    monkeypatch.setenv("GPUTOPO_METRICS_ADDRESS", "127.0.0.1:9999")
    monkeypatch.setenv("GPUTOPO_HEALTH_INTERVAL", "2.5")
    monkeypatch.setenv("GPUTOPO_NO_UDEV", "true")
    monkeypatch.setenv("GPUTOPO_POD_RESOURCES_SOCKET", "")
    monkeypatch.setenv("GPUTOPO_POD_RESOURCES_INTERVAL", "30")
    monkeypatch.setenv("GPUTOPO_XID_WINDOW", "0")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    assert args.pod_resources_interval == 30.0
    assert args.xid_window == 0.0
    assert args.metrics_address == "127.0.0.1:9999"
    assert args.health_interval == 2.5
    assert args.no_udev is True
    assert args.pod_resources_socket == "/var/lib/kubelet/pod-resources/kubelet.sock"
    assert parser.parse_args(["--health-interval", "4"]).health_interval == 4.0  # flag wins


def test_bad_environment_value_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUTOPO_JITTER", "lots")
    with pytest.raises(SystemExit, match=r"GPUTOPO_JITTER='lots': expected float"):
        add_arguments(argparse.ArgumentParser())


def test_metrics_address_forms() -> None:
    assert parse_address("0.0.0.0:9465") == ("0.0.0.0", 9465)
    assert parse_address(":9465") == ("0.0.0.0", 9465)
    assert parse_address("[::1]:9465") == ("::1", 9465)
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        parse_address("9465")


def test_pod_resources_poll_defaults_to_every_ten_seconds() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args([]).pod_resources_interval == 10.0


def test_json_log_lines() -> None:
    record = logging.LogRecord(
        "gputopo.agent.x", logging.WARNING, __file__, 1, "GPU %d lost", (3,), None
    )
    document = json.loads(JsonFormatter().format(record))
    assert document["level"] == "warning"
    assert document["logger"] == "gputopo.agent.x"
    assert document["msg"] == "GPU 3 lost"
    assert document["ts"].endswith("Z")


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run_args(**overrides: Any) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--no-udev", "--log-format", "text", "--pod-resources-socket", ""])
    args.interval = 3600.0
    args.dry_run = False
    for name, value in overrides.items():
        setattr(args, name, value)
    return args


def test_run_agent_serves_until_sigterm(discoverer: CountingDiscoverer) -> None:
    from gputopo.agent.runloop import run_agent

    port = _free_port()
    answers: list[int] = []

    def ready() -> int | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
                return int(response.status)
        except (urllib.error.URLError, ConnectionError):
            return None  # not serving yet, or not ready yet

    def probe_then_terminate() -> None:
        answers.append(eventually(ready, 10, "/readyz answering 200"))
        os.kill(os.getpid(), signal.SIGTERM)

    helper = threading.Thread(target=probe_then_terminate, daemon=True)
    helper.start()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        status = run_agent(discoverer, None, _run_args(metrics_address=f"127.0.0.1:{port}"))
    finally:
        root.handlers[:], root.level = handlers, level
    helper.join(timeout=10)
    assert status == 0
    assert answers == [200]


def test_run_agent_negative_xid_window_is_one_line(discoverer: CountingDiscoverer) -> None:
    from gputopo.agent.runloop import run_agent

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with pytest.raises(SystemExit, match=r"^gputopo-agent run: --xid-window -5.0: must be"):
            run_agent(discoverer, None, _run_args(xid_window=-5.0))
    finally:
        root.handlers[:], root.level = handlers, level


def test_run_agent_bad_address_is_one_line(discoverer: CountingDiscoverer) -> None:
    from gputopo.agent.runloop import run_agent

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with pytest.raises(SystemExit, match="--metrics-address 'nowhere'"):
            run_agent(discoverer, None, _run_args(metrics_address="nowhere"))
    finally:
        root.handlers[:], root.level = handlers, level


def test_every_run_option_has_an_environment_twin(monkeypatch: pytest.MonkeyPatch) -> None:
    from gputopo.agent.cli import build_parser

    monkeypatch.setenv("GPUTOPO_INTERVAL", "30")
    monkeypatch.setenv("GPUTOPO_MIG_STRATEGY", "mixed")
    monkeypatch.setenv("GPUTOPO_DRY_RUN", "true")
    monkeypatch.setenv("GPUTOPO_PUBLISH_NRT", "yes")
    monkeypatch.setenv("GPUTOPO_MOCK", "dgx-h100")
    args = build_parser().parse_args(["run"])
    assert args.interval == 30.0
    assert args.mig_strategy == "mixed"
    assert args.dry_run is True
    assert args.publish_nrt is True
    assert args.mock == "dgx-h100"
    assert build_parser().parse_args(["run", "--mig-strategy", "single"]).mig_strategy == "single"

    run_parser = next(
        action.choices["run"]
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    for action in run_parser._actions:
        if action.option_strings and not isinstance(action, argparse._HelpAction):
            assert env_name(max(action.option_strings, key=len)) in (action.help or "")


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("GPUTOPO_MIG_STRATEGY", "weird", "expected one of none, single, mixed"),
        ("GPUTOPO_DRY_RUN", "maybe", "expected true or false"),
        ("GPUTOPO_INTERVAL", "soon", "expected float"),
    ],
)
def test_bad_run_option_twin_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    from gputopo.agent.cli import build_parser

    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit, match=f"{variable}='{value}': {expected}"):
        build_parser()
