"""The runtime's wiring: which watches start, and NodeResourceTopology events reaching the GPU
allocator."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from gputopo.scheduler.runtime.core_adapter import CoreFramework
from gputopo.scheduler.runtime.handlers import NRT_KIND
from gputopo.scheduler.runtime.kube import KubeApiError
from gputopo.scheduler.runtime.queue import QueuedPod
from gputopo.scheduler.runtime.runner import NRT_API, RuntimeConfig, SchedulerRuntime


class _DiscoveryApi:
    """Answers only the group/version discovery GETs the runtime makes before watching CRDs."""

    def __init__(self, missing: set[str], unreachable: bool = False) -> None:
        self.missing = missing
        self.unreachable = unreachable

    def request(self, method: str, path: str, **_: Any) -> dict[str, Any]:
        if self.unreachable:
            raise OSError("connection refused")
        if path in self.missing:
            raise KubeApiError(method, path, 404, "NotFound", "the server could not find it")
        return {"kind": "APIResourceList", "groupVersion": path.removeprefix("/apis/")}


def _runtime(api: Any) -> SchedulerRuntime:
    return SchedulerRuntime(api, CoreFramework(), RuntimeConfig(metrics_address=None))


def test_nrt_watch_is_skipped_only_when_the_api_server_denies_the_crd() -> None:
    assert _runtime(_DiscoveryApi({NRT_API}))._api_served(NRT_API) is False
    assert _runtime(_DiscoveryApi(set()))._api_served(NRT_API) is True
    # Unreachable is not "not installed": the watch starts and retries with backoff.
    assert _runtime(_DiscoveryApi(set(), unreachable=True))._api_served(NRT_API) is True


def test_nrt_events_reach_the_allocator_and_a_delete_forgets() -> None:
    runtime = _runtime(_DiscoveryApi(set()))
    framework = runtime.framework
    assert isinstance(framework, CoreFramework)
    nrt = {
        "metadata": {"name": "dgx-a", "resourceVersion": "7"},
        "zones": [{"name": "node-1", "resources": [{"name": "nvidia.com/gpu", "available": 3}]}],
    }
    runtime.handlers.on_add(NRT_KIND, nrt)
    assert dict(framework.gpus.nrt["dgx-a"].available) == {1: 3}
    newer = {
        **nrt,
        "zones": [{"name": "node-1", "resources": [{"name": "nvidia.com/gpu", "available": 1}]}],
    }
    runtime.handlers.on_update(NRT_KIND, nrt, newer)
    assert dict(framework.gpus.nrt["dgx-a"].available) == {1: 1}
    runtime.handlers.on_delete(NRT_KIND, newer)
    assert "dgx-a" not in framework.gpus.nrt


class _BindingApi(_DiscoveryApi):
    """Discovery as above; records bindings, accepts events."""

    def __init__(self) -> None:
        super().__init__(set())
        self.bound: list[tuple[str, str]] = []

    def bind(self, namespace: str, pod_name: str, pod_uid: str, node_name: str) -> None:
        self.bound.append((f"{namespace}/{pod_name}", node_name))


def test_a_binding_is_logged_at_debug_and_recorded_by_its_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = _BindingApi()
    runtime = _runtime(api)
    runtime._leading.set()
    runtime.cache.upsert_node(
        {"metadata": {"name": "n1"}, "status": {"allocatable": {"cpu": "4", "pods": "10"}}}
    )
    pods = [
        {"metadata": {"name": name, "namespace": "default", "uid": name}, "spec": {}}
        for name in ("a", "b")
    ]
    for pod, level in zip(pods, (logging.INFO, logging.DEBUG), strict=True):
        runtime.cache.assume(pod, "n1")
        caplog.clear()
        with caplog.at_level(level, logger="gputopo.scheduler.runtime"):
            runtime.binder.bind(QueuedPod(pod, 0, 0.0), "n1")
        bound = [r for r in caplog.records if r.getMessage() == "pod bound"]
        assert len(bound) == (level == logging.DEBUG)
    runtime.stop()  # the event workers finish
    assert api.bound == [("default/a", "n1"), ("default/b", "n1")]
