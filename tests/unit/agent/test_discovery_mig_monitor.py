"""Issue 15 #3 as a real MIG node shows it: without the MIG monitor capability
(NVIDIA_MIG_MONITOR_DEVICES=all) NVML answers NO_PERMISSION on MIG-enabled GPUs, so no MIG device
and no profile name can be read. discover then says which calls failed, per GPU, in its JSON and
its text, instead of silently showing no MIG devices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gputopo.agent.cli import main
from gputopo.agent.discovery import discover
from gputopo.agent.render import render_text
from gputopo.mocks.fake_pynvml import MIG_MONITOR_ENV, make_fake_pynvml
from gputopo.mocks.profile import load_profile
from gputopo.mocks.sysfs import build_sysfs


def test_mig_gpus_without_monitor_access_name_their_failed_calls_dgx_a100_mig(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(MIG_MONITOR_ENV)
    profile = load_profile("dgx-a100-mig")
    topology = discover(make_fake_pynvml(profile), build_sysfs(profile, tmp_path / "sys"), "mig")
    enabled = [gpu for gpu in topology.gpus if gpu.mig.enabled]
    assert enabled
    for gpu in enabled:
        assert gpu.mig.instances == ()
        assert "nvmlDeviceGetMigDeviceHandleByIndex: NoPermission" in gpu.nvml_errors
        assert "nvmlDeviceGetMemoryInfo: NoPermission" in gpu.nvml_errors
    assert all(not gpu.nvml_errors for gpu in topology.gpus if not gpu.mig.enabled)
    text = render_text(topology)
    assert "NVML errors" in text
    assert "nvmlDeviceGetMigDeviceHandleByIndex: NoPermission" in text


def test_mig_gpus_with_monitor_access_as_the_daemonset_give_it_have_no_errors_dgx_a100_mig(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(MIG_MONITOR_ENV, "all")
    profile = load_profile("dgx-a100-mig")
    topology = discover(make_fake_pynvml(profile), build_sysfs(profile, tmp_path / "sys"), "mig")
    assert any(gpu.mig.instances for gpu in topology.gpus)
    assert all(gpu.nvml_errors == () for gpu in topology.gpus)
    assert "NVML errors" not in render_text(topology)


def test_discover_json_carries_each_gpus_nvml_errors_dgx_a100_mig(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(MIG_MONITOR_ENV)
    assert main(["discover", "--mock", "dgx-a100-mig"]) == 0
    document = json.loads(capsys.readouterr().out)
    errors = {gpu["index"]: gpu["nvml_errors"] for gpu in document["gpus"]}
    assert "nvmlDeviceGetMigDeviceHandleByIndex: NoPermission" in errors[0]
