"""A MIG-enabled GPU answers NOT_SUPPORTED for its utilisation on real NVML: the sampler leaves
the parent's utilisation unknown without an error or a log line, and discovery stays complete."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gputopo.agent.discovery import discover
from gputopo.agent.nvml.sampling import sample_gpus
from gputopo.mocks.fake_pynvml import MIG_MONITOR_ENV, make_fake_pynvml
from gputopo.mocks.profile import load_profile
from gputopo.mocks.sysfs import build_sysfs


def test_mig_parent_utilisation_unknown_no_error_no_partial_discovery(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(MIG_MONITOR_ENV, "all")
    profile = load_profile("dgx-a100-mig")
    module = make_fake_pynvml(profile)
    mig_enabled = {i for i, gpu in enumerate(profile.gpus) if gpu.mig.enabled}
    assert mig_enabled and len(mig_enabled) < len(profile.gpus)

    caplog.set_level(logging.DEBUG)
    module.nvmlInit()
    try:
        loads = sample_gpus(module)
    finally:
        module.nvmlShutdown()
    for index, load in loads.items():
        if index in mig_enabled:
            assert load.utilization_ratio is None and load.memory_utilization_ratio is None
            assert load.mig_devices  # the MIG devices are still sampled
        else:
            assert load.utilization_ratio is not None
        assert not load.lost
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

    topology = discover(module, build_sysfs(profile, tmp_path / "sys"), "dgx")
    assert topology.incomplete == ()
    for gpu in topology.gpus:
        assert not any("Utilization" in error for error in getattr(gpu, "errors", ()))
