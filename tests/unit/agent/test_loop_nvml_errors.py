"""The run loop logs each GPU's failing NVML queries once per change, not every cycle."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from gputopo.agent.loop import log_nvml_error_changes
from gputopo.agent.topology import NodeInfo, NodeTopology, NvmlStatus
from tests.unit.agent.machines import h100

DENIED = ("nvmlDeviceGetMigDeviceHandleByIndex: NoPermission",) * 7


def _node(*errors: tuple[str, ...]) -> NodeTopology:
    gpus = tuple(replace(h100(i, 0), nvml_errors=e) for i, e in enumerate(errors))
    return NodeTopology(node=NodeInfo(hostname="n"), nvml=NvmlStatus(True), gpus=gpus)


def test_nvml_errors_are_logged_once_per_change_and_when_they_clear(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gputopo.agent.loop")
    state = log_nvml_error_changes({}, _node(DENIED, ()))
    assert [r.getMessage() for r in caplog.records] == [
        "GPU 0 (GPU-00000000-h100): NVML queries failing: "
        "nvmlDeviceGetMigDeviceHandleByIndex: NoPermission x7"
    ]
    caplog.clear()
    for _ in range(3):
        state = log_nvml_error_changes(state, _node(DENIED, ()))
    assert caplog.records == []
    state = log_nvml_error_changes(state, _node((), ()))
    assert [r.getMessage() for r in caplog.records] == [
        "GPU 0 (GPU-00000000-h100): NVML queries no longer failing"
    ]
    assert state == {}
