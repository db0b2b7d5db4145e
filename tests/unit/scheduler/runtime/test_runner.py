"""The runtime's wiring: which watches start, and NodeResourceTopology events reaching the GPU
allocator."""

from __future__ import annotations

from typing import Any

from gputopo.scheduler.runtime.core_adapter import CoreFramework
from gputopo.scheduler.runtime.handlers import NRT_KIND
from gputopo.scheduler.runtime.kube import KubeApiError
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
