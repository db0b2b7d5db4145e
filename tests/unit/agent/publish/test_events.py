"""Events on the agent's Node: one per situation, by name, never raised."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from gputopo.agent.publish.events import NodeEvents, event_name
from gputopo.core.kube import KubeApiError

SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


class Api:
    def __init__(self, status: int | None = None) -> None:
        self.status = status
        self.bodies: list[dict[str, Any]] = []

    def request(self, method: str, path: str, *, body: Any = None, decode: bool = True) -> Any:
        assert (method, path, decode) == ("POST", "/api/v1/namespaces/default/events", False)
        self.bodies.append(body)
        if self.status is not None:
            raise KubeApiError(method, path, self.status, b"{}", "refused")
        return None


def test_the_name_depends_on_node_reason_and_subject_only() -> None:
    name = event_name("gpu-1", "LabelConflict", "nvidia.com/gpu.product")
    assert name.startswith("gpu-1.gputopo-labelconflict-")
    assert name == event_name("gpu-1", "LabelConflict", "nvidia.com/gpu.product")
    assert name != event_name("gpu-1", "LabelConflict", "nvidia.com/gpu.count")
    assert name != event_name("gpu-2", "LabelConflict", "nvidia.com/gpu.product")


def test_a_long_node_name_still_gives_a_valid_unique_name() -> None:
    long_a, long_b = "a" * 250, "a" * 249 + "b"
    name_a = event_name(long_a, "LabelConflict", "k")
    assert len(name_a) <= 253
    assert name_a != event_name(long_b, "LabelConflict", "k")
    assert SUBDOMAIN.fullmatch(name_a), name_a


def test_an_event_on_the_node() -> None:
    api = Api()
    events = NodeEvents(api, "gpu-1")
    assert events.warn_once("LabelConflict", "k", "m" * 2000, node_uid="u-1")
    body = api.bodies[0]
    assert body["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Node",
        "name": "gpu-1",
        "uid": "u-1",
    }
    assert (body["type"], body["reason"], len(body["message"])) == (
        "Warning",
        "LabelConflict",
        1024,
    )
    assert body["source"] == {"component": "gputopo-agent", "host": "gpu-1"}
    assert events.created == 1


def test_an_existing_event_is_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    events = NodeEvents(Api(409), "gpu-1")
    assert not events.warn_once("LabelConflict", "k", "m")
    assert events.created == 0 and caplog.records == []


def test_a_refused_event_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    events = NodeEvents(Api(403), "gpu-1")
    assert not events.warn_once("LabelConflict", "k", "m")
    assert "could not record LabelConflict Event on Node gpu-1: HTTP 403" in caplog.text
