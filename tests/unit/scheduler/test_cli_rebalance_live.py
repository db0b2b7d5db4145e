"""`gputopo-scheduler rebalance` without --cluster: the controller's flags and their twins."""

from __future__ import annotations

import pytest

from gputopo.scheduler.cli import build_parser, main
from gputopo.scheduler.cli_rebalance import controller_settings
from gputopo.scheduler.rebalance_controller import RebalanceSettings


def _settings(argv: list[str]) -> RebalanceSettings:
    return controller_settings(build_parser().parse_args(["rebalance", *argv]))


def test_dry_run_is_the_default_and_false_must_be_said() -> None:
    assert _settings([]).dry_run is True
    assert _settings(["--dry-run"]).dry_run is True
    assert _settings(["--dry-run=false"]).dry_run is False


def test_durations_take_go_units_and_plain_seconds() -> None:
    settings = _settings(["--wait", "5m", "--interval", "30s", "--cooldown", "90"])
    assert settings.wait_s == 300.0
    assert settings.interval_s == 30.0
    assert settings.cooldown_s == 90.0
    assert _settings(["--node-cooldown", "1h"]).node_cooldown_s == 3600.0


def test_every_flag_has_an_environment_twin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUTOPO_DRY_RUN", "false")
    monkeypatch.setenv("GPUTOPO_WAIT", "2m")
    monkeypatch.setenv("GPUTOPO_EVICTIONS_PER_MINUTE", "1")
    settings = _settings([])
    assert settings.dry_run is False
    assert settings.wait_s == 120.0
    assert settings.evictions_per_minute == 1.0


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--dry-run=maybe"], "--dry-run"),
        (["--wait", "5 minutes"], "--wait"),
        (["--interval", "0"], "--interval"),
        (["--evictions-per-minute", "0"], "--evictions-per-minute"),
        (["--cooldown", "-1s"], "--cooldown"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_flag(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["rebalance", *argv])
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and named in error


def test_a_bad_metrics_address_fails_before_any_api_call(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["rebalance", "--metrics-address", "nonsense", "--kubeconfig", "/nonexistent"])
    assert code != 0
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--metrics-address" in error
