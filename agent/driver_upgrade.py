"""The GPU Operator's driver upgrade, as the agent sees it on its own Node.

The operator's upgrade controller (NVIDIA/k8s-operator-libs, ``pkg/upgrade``) walks each node
through states it writes into the label ``nvidia.com/gpu-driver-upgrade-state`` ("gpu" is the
driver name the GPU Operator gives the library): ``upgrade-required``, ``cordon-required``,
``wait-for-jobs-required``, ``pod-deletion-required``, ``drain-required`` (or, with an external
maintenance operator, ``node-maintenance-required`` then ``post-maintenance-required``),
``pod-restart-required``, ``validation-required``, ``uncordon-required``, ``upgrade-done``; or
``upgrade-failed``. In ``pod-restart-required`` it deletes the driver pod, whose successor
unloads the kernel modules; that fails while any process holds NVML initialised (``rmmod``:
module in use). So the agent lets go of NVML from the moment the controller starts removing
the node's GPU workloads (:data:`RELEASE_STATES`) and opens it again once the new driver is
running (``validation-required`` on, so that a GPU that came back broken is tainted before the
node is uncordoned). docs/coexistence.md has the whole behaviour.
"""

from __future__ import annotations

import urllib.parse
from typing import Any, Final, Protocol

UPGRADE_STATE_LABEL: Final = "nvidia.com/gpu-driver-upgrade-state"

# The states in which the driver is about to be, or is being, unloaded and replaced.
RELEASE_STATES: Final = frozenset(
    {
        "pod-deletion-required",
        "drain-required",
        "node-maintenance-required",
        "post-maintenance-required",
        "pod-restart-required",
    }
)

# How often the agent reads the label (one GET of its own Node, served from the API server's
# watch cache). The controller spends at least one reconcile in each state before it deletes
# the driver pod, and the new driver pod retries its unload, so a few seconds' lag is harmless.
DEFAULT_UPGRADE_POLL_S: Final = 10.0
# The read runs on the health thread: an API server that does not answer must not hold it up
# for long (its liveness limit is 30 s).
READ_TIMEOUT_S: Final = 5.0


def releases_nvml(state: str | None) -> bool:
    """Whether NVML must be released while the node's upgrade state is ``state``."""
    return state in RELEASE_STATES


class NodeGetApi(Protocol):
    def request(
        self, method: str, path: str, *, query: Any = ..., timeout_s: float | None = ...
    ) -> Any: ...


class UpgradeStateReader:
    """Reads the upgrade-state label of one Node (``None``: no upgrade under way).

    Raises what the API call raised: the caller keeps its last answer on an error, so an API
    server that is briefly away neither releases nor reopens NVML."""

    def __init__(self, api: NodeGetApi, node_name: str) -> None:
        self.api = api
        self.node_name = node_name

    def __call__(self) -> str | None:
        path = f"/api/v1/nodes/{urllib.parse.quote(self.node_name, safe='')}"
        # resourceVersion=0: any recent version will do, served from the watch cache.
        node = self.api.request(
            "GET", path, query={"resourceVersion": "0"}, timeout_s=READ_TIMEOUT_S
        )
        labels = (node.get("metadata") or {}).get("labels") or {}
        state = labels.get(UPGRADE_STATE_LABEL)
        return state if isinstance(state, str) and state else None
