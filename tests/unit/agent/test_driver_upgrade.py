"""The GPU Operator's upgrade states (NVIDIA/k8s-operator-libs pkg/upgrade) and which of them
mean "the driver is about to be, or is being, replaced"."""

from __future__ import annotations

from typing import Any

import pytest

from gputopo.agent.driver_upgrade import (
    RELEASE_STATES,
    UPGRADE_STATE_LABEL,
    UpgradeStateReader,
    releases_nvml,
)

# Every state the upgrade controller writes, in the order it walks a node through them.
OPERATOR_STATES = [
    "upgrade-required",
    "cordon-required",
    "wait-for-jobs-required",
    "pod-deletion-required",
    "drain-required",
    "node-maintenance-required",
    "post-maintenance-required",
    "pod-restart-required",
    "validation-required",
    "uncordon-required",
    "upgrade-done",
    "upgrade-failed",
]


def test_the_label_is_the_gpu_operators() -> None:
    assert UPGRADE_STATE_LABEL == "nvidia.com/gpu-driver-upgrade-state"


def test_nvml_is_released_from_pod_deletion_until_the_new_driver_runs() -> None:
    released = [state for state in OPERATOR_STATES if releases_nvml(state)]
    assert released == [
        "pod-deletion-required",
        "drain-required",
        "node-maintenance-required",
        "post-maintenance-required",
        "pod-restart-required",
    ]
    assert set(released) == RELEASE_STATES
    assert not releases_nvml(None)
    assert not releases_nvml("")


class FakeApi:
    def __init__(self, labels: dict[str, str] | None) -> None:
        self.labels = labels
        self.calls: list[tuple[str, str, Any]] = []

    def request(
        self, method: str, path: str, *, query: Any = None, timeout_s: float | None = None
    ) -> Any:
        self.calls.append((method, path, query))
        assert timeout_s == 5.0  # short: the read runs on the health thread
        metadata: dict[str, Any] = {"name": "gpu-1"}
        if self.labels is not None:
            metadata["labels"] = self.labels
        return {"metadata": metadata}


@pytest.mark.parametrize(
    ("labels", "state"),
    [
        ({UPGRADE_STATE_LABEL: "drain-required", "team": "ml"}, "drain-required"),
        ({UPGRADE_STATE_LABEL: ""}, None),
        ({"team": "ml"}, None),
        (None, None),
    ],
)
def test_the_reader_reads_its_own_node_from_the_watch_cache(
    labels: dict[str, str] | None, state: str | None
) -> None:
    api = FakeApi(labels)
    assert UpgradeStateReader(api, "gpu/1")() == state
    assert api.calls == [("GET", "/api/v1/nodes/gpu%2F1", {"resourceVersion": "0"})]
