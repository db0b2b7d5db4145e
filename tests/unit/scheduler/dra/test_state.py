"""`DraState`'s map of extended resources to the DeviceClasses that serve them (KEP-5004): the
first class by name wins, and the map follows every DeviceClass change."""

from __future__ import annotations

from typing import Any

from gputopo.scheduler.dra.state import DraState
from gputopo.scheduler.model import parse_pod


def _device_class(name: str, resource: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"selectors": []}
    if resource is not None:
        spec["extendedResourceName"] = resource
    return {"metadata": {"name": name}, "spec": spec}


def _pod(requests: dict[str, str]) -> Any:
    return parse_pod(
        {
            "metadata": {"name": "p", "namespace": "default", "uid": "u"},
            "spec": {"containers": [{"name": "main", "resources": {"requests": requests}}]},
        }
    )


def test_only_watched_state_maps_extended_resources() -> None:
    state = DraState()
    state.observe("DeviceClass", _device_class("gpu.example.com", "example.com/gpu"))
    assert state.extended_class("example.com/gpu") is None
    state.watched = True
    found = state.extended_class("example.com/gpu")
    assert found is not None and found.name == "gpu.example.com"


def test_the_first_class_by_name_serves_a_resource_and_the_map_follows_changes() -> None:
    state = DraState()
    state.watched = True
    state.observe("DeviceClass", _device_class("b-gpu", "example.com/gpu"))
    assert state.extended_classes()["example.com/gpu"].name == "b-gpu"
    state.observe("DeviceClass", _device_class("a-gpu", "example.com/gpu"))
    assert state.extended_classes()["example.com/gpu"].name == "a-gpu"
    state.forget_object("DeviceClass", "a-gpu")
    assert state.extended_classes()["example.com/gpu"].name == "b-gpu"
    state.observe("DeviceClass", _device_class("b-gpu", None))  # no longer serves it
    assert state.extended_class("example.com/gpu") is None
    assert state.extended_classes() == {}


def test_a_name_without_a_domain_is_no_extended_resource() -> None:
    state = DraState()
    state.watched = True
    state.observe("DeviceClass", _device_class("cpu-class", "cpu"))
    assert state.extended_classes() == {}
    assert state.extended_requests(_pod({"cpu": "2"})) == {}


def test_a_pods_requests_of_mapped_resources_with_their_classes() -> None:
    state = DraState()
    state.watched = True
    state.observe("DeviceClass", _device_class("gpu.example.com", "example.com/gpu"))
    pod = _pod({"cpu": "1", "example.com/gpu": "2", "example.com/nic": "1"})
    requests = state.extended_requests(pod)
    assert {name: (amount, cls.name) for name, (amount, cls) in requests.items()} == {
        "example.com/gpu": (2, "gpu.example.com")
    }
    assert state.extended_requests(_pod({"example.com/gpu": "0"})) == {}
