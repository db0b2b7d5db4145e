"""`gputopo-scheduler run` flags: environment twins, and one-line errors for bad input."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from gputopo.scheduler.cli import build_parser, main
from gputopo.scheduler.cli_load import build_load_tracker
from gputopo.scheduler.cli_run import runtime_config


@pytest.fixture(autouse=True)
def _restore_scheduler_logging() -> Iterator[None]:
    """`run` configures JSON logging on gputopo.scheduler; leave the logger as it was."""
    logger = logging.getLogger("gputopo.scheduler")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


def test_environment_twins_set_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUTOPO_SCHEDULER_NAME", "gpu-batch")
    monkeypatch.setenv("GPUTOPO_LEASE_NAMESPACE", "gputopo-system")
    monkeypatch.setenv("GPUTOPO_IDENTITY", "gputopo-scheduler-7d9f-abcde")
    monkeypatch.setenv("GPUTOPO_LEASE_DURATION", "30")
    monkeypatch.setenv("GPUTOPO_METRICS_ADDRESS", "127.0.0.1:9000")
    monkeypatch.setenv("GPUTOPO_LEADER_ELECT", "false")
    args = build_parser().parse_args(["run"])
    assert args.scheduler_name == "gpu-batch"
    assert args.lease_namespace == "gputopo-system"
    assert args.identity == "gputopo-scheduler-7d9f-abcde"
    assert args.lease_duration == 30.0
    assert args.metrics_address == "127.0.0.1:9000"
    assert args.leader_elect is False


def test_flags_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUTOPO_SCHEDULER_NAME", "from-env")
    args = build_parser().parse_args(["run", "--scheduler-name", "from-flag", "--leader-elect"])
    assert (args.scheduler_name, args.leader_elect) == ("from-flag", True)


def test_defaults_match_kube_scheduler_leader_election(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GPUTOPO_LEASE_DURATION", "GPUTOPO_RENEW_DEADLINE", "GPUTOPO_RETRY_PERIOD"):
        monkeypatch.delenv(name, raising=False)
    args = build_parser().parse_args(["run"])
    assert (args.lease_duration, args.renew_deadline, args.retry_period) == (15.0, 10.0, 2.0)


def test_unreadable_kubeconfig_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--kubeconfig", "/nonexistent/kubeconfig"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gputopo-scheduler: error: kubeconfig '/nonexistent/kubeconfig':")
    assert "\n" not in err


def test_inconsistent_lease_timings_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--kubeconfig", "/nonexistent", "--renew-deadline", "20"]) == 2
    assert "retry period < renew deadline < lease duration" in capsys.readouterr().err


def test_bad_profile_names_the_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--profile", "/nonexistent/profile.yaml"]) == 2
    assert "/nonexistent/profile.yaml" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("GPUTOPO_LOG_LEVEL", "verbose", "expected one of debug, info, warning, error"),
        ("GPUTOPO_LEASE_DURATION", "soon", r"expected a number in \[0.1, 3600\]"),
        ("GPUTOPO_BIND_WORKERS", "many", r"expected an integer in \[1, 256\]"),
        ("GPUTOPO_LEADER_ELECT", "maybe", "expected true or false"),
    ],
)
def test_bad_environment_twin_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(
        SystemExit, match=f"^gputopo-scheduler: error: {variable}='{value}': {expected}$"
    ):
        build_parser()


def test_repeatable_flags_take_one_value_from_their_twin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUTOPO_LOAD_THRESHOLD", "gpu_utilization=0.9")
    assert build_parser().parse_args(["run"]).load_threshold == ["gpu_utilization=0.9"]
    flags = build_parser().parse_args(["run", "--load-threshold", "node_cpu=0.8"])
    assert flags.load_threshold == ["gpu_utilization=0.9", "node_cpu=0.8"]


def test_extender_listen_keeps_its_documented_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUTOPO_EXTENDER_LISTEN", "127.0.0.1:9999")
    monkeypatch.setenv("GPUTOPO_LOG_LEVEL", "debug")
    args = build_parser().parse_args(["extender"])
    assert (args.listen, args.log_level) == ("127.0.0.1:9999", "debug")


def test_extender_takes_the_same_load_flags_and_twins_as_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GPUTOPO_PROMETHEUS_URL", "http://prometheus.monitoring:9090")
    monkeypatch.setenv("GPUTOPO_LOAD_WINDOW", "120")
    monkeypatch.setenv("GPUTOPO_LOAD_THRESHOLD", "gpu_utilization=0.9")
    for command in ("run", "extender"):
        args = build_parser().parse_args(
            [command, "--load-timeout", "0.5", "--load-max-age", "30", "--load-query", "node_cpu=x"]
        )
        assert args.prometheus_url == "http://prometheus.monitoring:9090"
        assert (args.load_window, args.load_timeout, args.load_max_age) == (120.0, 0.5, 30.0)
        assert args.load_threshold == ["gpu_utilization=0.9"]
        assert args.load_query == ["node_cpu=x"]


def test_extender_load_flags_build_the_tracker_run_would() -> None:
    args = build_parser().parse_args(
        [
            "extender",
            "--prometheus-url",
            "http://127.0.0.1:9090",
            "--load-threshold",
            "node_cpu=0.8",
            "--load-query",
            "gpu_memory=max(x[{window}])",
        ]
    )
    tracker = build_load_tracker(args)
    assert tracker is not None
    assert tracker.config.thresholds == {"node_cpu": 0.8}
    assert tracker.config.queries["gpu_memory"] == "max(x[{window}])"
    assert build_load_tracker(build_parser().parse_args(["extender"])) is None


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--load-threshold", "gpu_utilization=most"], "--load-threshold gpu_utilization=most:"),
        (["--load-query", "disk=up"], "--load-query disk: expected one of"),
        (["--load-threshold", "gpu_utilization"], "--load-threshold 'gpu_utilization':"),
    ],
)
def test_extender_bad_load_flag_is_one_line_naming_it(
    flags: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["extender", "--kubeconfig", "/nonexistent", "--listen", ":0"]
    assert main([*argv, "--prometheus-url", "http://127.0.0.1:1", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"gputopo-scheduler: error: {expected}")
    assert "\n" not in err


def test_negative_nrt_max_age_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--kubeconfig", "/nonexistent", "--nrt-max-age", "-1"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "gputopo-scheduler: error: argument --nrt-max-age: "
        "expected a number in [0, 604800], got '-1' (see --help)"
    )


def test_nrt_max_age_twin_and_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_parser().parse_args(["run"]).nrt_max_age == 0.0
    monkeypatch.setenv("GPUTOPO_NRT_MAX_AGE", "300")
    assert build_parser().parse_args(["run"]).nrt_max_age == 300.0


def test_gang_backoff_reaches_the_runtime_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUTOPO_GANG_BACKOFF", "45")
    config = runtime_config(build_parser().parse_args(["run", "--bind-workers", "4"]))
    assert (config.gang_backoff_s, config.bind_workers) == (45.0, 4)


def test_negative_gang_backoff_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--kubeconfig", "/nonexistent", "--gang-backoff", "-1"])
    assert exit_.value.code == 2
    assert "--gang-backoff: expected a number in [0, 86400], got '-1'" in capsys.readouterr().err


def test_bad_metrics_address_is_one_line_before_any_api_call(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["run", "--kubeconfig", "/nonexistent", "--metrics-address", "nowhere"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gputopo-scheduler: error: --metrics-address 'nowhere': expected")
    assert err.count("\n") == 1
