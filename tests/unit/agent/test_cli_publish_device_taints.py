"""`gputopo-agent run`'s device-taint flags: effects a device taint has, a driver name, twins."""

from __future__ import annotations

import pytest

from gputopo.agent.cli import build_parser, main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse usage errors
        status = int(exit_.code or 0)
    return status, capsys.readouterr().err


def test_defaults_are_none_no_schedule_no_execute_for_gpu_nvidia_com() -> None:
    args = build_parser().parse_args(["run", "--node-name", "n1"])

    assert args.publish_device_taints is False
    assert args.dra_driver == "gpu.nvidia.com"
    assert (
        args.device_taint_effect_degraded,
        args.device_taint_effect_failed,
        args.device_taint_effect_reset_required,
    ) == ("None", "NoSchedule", "NoExecute")


def test_a_node_only_effect_is_refused_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    status, err = run(
        ["run", "--once", "--node-name", "n1", "--device-taint-effect-failed", "PreferNoSchedule"],
        capsys,
    )
    assert status == 2
    assert "--device-taint-effect-failed: invalid choice: 'PreferNoSchedule'" in err


def test_an_empty_driver_is_one_line_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    status, err = run(
        [
            "run",
            "--once",
            "--mock",
            "dgx-h100",
            "--node-name",
            "n1",
            "--publish-device-taints",
            "--dra-driver",
            "",
        ],
        capsys,
    )
    assert status == 2
    assert err.count("\n") == 1 and "--dra-driver '': expected a DRA driver name" in err


def test_a_driver_that_is_no_dns_subdomain_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    status, err = run(
        ["run", "--once", "--node-name", "n1", "--publish-device-taints", "--dra-driver", "GPU!"],
        capsys,
    )
    assert status == 2
    assert err == (
        "gputopo-agent: error: --dra-driver 'GPU!': expected a DRA driver name, a DNS subdomain "
        "of at most 63 characters like gpu.nvidia.com\n"
    )


def test_the_flags_have_environment_twins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUTOPO_PUBLISH_DEVICE_TAINTS", "true")
    monkeypatch.setenv("GPUTOPO_DEVICE_TAINT_EFFECT_RESET_REQUIRED", "NoSchedule")

    args = build_parser().parse_args(["run", "--node-name", "n1"])

    assert args.publish_device_taints is True
    assert args.device_taint_effect_reset_required == "NoSchedule"
