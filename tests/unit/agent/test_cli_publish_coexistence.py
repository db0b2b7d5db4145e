"""The coexistence flags of `labels` and `run`: --nvidia-labels (env GPUTOPO_NVIDIA_LABELS) and
--driver-upgrade-poll-interval (env GPUTOPO_DRIVER_UPGRADE_POLL_INTERVAL)."""

from __future__ import annotations

import json
import re

import pytest

from gputopo.agent.cli import build_parser, main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        status = main(argv)
    except SystemExit as exit_:
        status = int(exit_.code or 0)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_defaults_defer_to_gfd_and_read_the_upgrade_label_every_ten_seconds() -> None:
    args = build_parser().parse_args(["run"])
    assert args.nvidia_labels == "defer"
    assert args.driver_upgrade_poll_interval == 10.0


def test_environment_twins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUTOPO_NVIDIA_LABELS", "off")
    monkeypatch.setenv("GPUTOPO_DRIVER_UPGRADE_POLL_INTERVAL", "0")
    args = build_parser().parse_args(["run"])
    assert (args.nvidia_labels, args.driver_upgrade_poll_interval) == ("off", 0.0)
    assert build_parser().parse_args(["run", "--nvidia-labels", "own"]).nvidia_labels == "own"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("GPUTOPO_NVIDIA_LABELS", "mine", "expected one of own, defer, off"),
        ("GPUTOPO_DRIVER_UPGRADE_POLL_INTERVAL", "-1", r"expected a number in \[0, 3600\]"),
    ],
)
def test_a_bad_twin_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    expected: str,
) -> None:
    monkeypatch.setenv(variable, value)
    status, out, err = run(["run", "--once"], capsys)
    assert (status, out) == (2, "")
    assert err.count("\n") == 1
    assert f"{variable}='{value}': " in err
    assert re.search(expected, err), err


def test_a_bad_flag_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(["labels", "--mock", "dgx-h100", "--nvidia-labels", "all"], capsys)
    assert (status, out) == (2, "")
    assert "--nvidia-labels: invalid choice: 'all'" in err and err.count("\n") == 1


@pytest.mark.parametrize("mode", ["own", "defer", "off"])
def test_labels_shows_what_each_mode_publishes_dgx_h100(
    capsys: pytest.CaptureFixture[str], mode: str
) -> None:
    status, out, _ = run(["labels", "--mock", "dgx-h100", "--nvidia-labels", mode], capsys)
    assert status == 0
    labels = json.loads(out)["labels"]
    nvidia = {k: v for k, v in labels.items() if k.startswith("nvidia.com/")}
    if mode == "off":
        assert nvidia == {}
    else:
        assert nvidia["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert labels["gputopo.io/gpu.present"] == "true"
