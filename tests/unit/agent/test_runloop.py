"""``gputopo-agent run``'s plumbing around the loop (agent/runloop.py): the probe and metrics
server and ``run_agent`` end to end on the real clock (the flags, their environment twins and
the log lines are tested with the CLI: tests/unit/agent/test_cli_publish.py, tests/unit/core)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest

from gputopo.agent.cli import build_parser
from gputopo.agent.loop import Agent, RunLoopConfig
from gputopo.agent.runloop import serve
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


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run_args(**overrides: Any) -> argparse.Namespace:
    args = build_parser().parse_args(
        ["run", "--no-udev", "--log-format", "text", "--pod-resources-socket", ""]
    )
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
        with pytest.raises(SystemExit, match=r"^gputopo-agent: error: --xid-window -5.0: must be"):
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
