"""The `labels` and `run` subcommands' argument handling: one-line errors, never tracebacks."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from gputopo.agent.cli import build_parser, main
from gputopo.agent.runloop import RunLoopConfig
from gputopo.core.flags import env_name


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse usage errors
        status = int(exit_.code or 0)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_run_without_node_name_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NODE_NAME", raising=False)
    status, _, err = run(["run", "--once", "--mock", "dgx-h100"], capsys)
    assert status == 2
    assert err == "gputopo-agent: error: no node to publish to: pass --node-name or set NODE_NAME\n"


def test_bad_prefix_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(["labels", "--prefix", "Not_A_Domain"], capsys)
    assert status == 2
    assert "--prefix 'Not_A_Domain': not a DNS subdomain" in err


def test_bad_mig_strategy_is_refused_by_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(["labels", "--mig-strategy", "auto"], capsys)
    assert status == 2
    assert "invalid choice: 'auto'" in err


def test_unreadable_kubeconfig_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(
        ["run", "--once", "--node-name", "n1", "--kubeconfig", "/nonexistent/kubeconfig"], capsys
    )
    assert status == 2
    assert err.startswith("gputopo-agent: error: --kubeconfig '/nonexistent/kubeconfig':")
    assert err.count("\n") == 1


def test_an_unknown_kubeconfig_context_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "main", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "main",
            }
        )
    )
    argv = ["run", "--once", "--node-name", "n1", "--kubeconfig", str(kubeconfig)]
    status, _, err = run([*argv, "--context", "staging"], capsys)
    assert status == 2
    assert err.startswith(f"gputopo-agent: error: --kubeconfig '{kubeconfig}':")
    assert "staging" in err
    assert err.count("\n") == 1


# -- `run`'s loop flags and their environment twins (moved here from the run loop's tests) --------


def _run_parser() -> argparse.ArgumentParser:
    return next(
        action.choices["run"]
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )


def test_flags_default_to_their_environment_twins(monkeypatch: pytest.MonkeyPatch) -> None:
    assert env_name("--metrics-address") == "GPUTOPO_METRICS_ADDRESS"
    monkeypatch.setenv("GPUTOPO_METRICS_ADDRESS", "127.0.0.1:9999")
    monkeypatch.setenv("GPUTOPO_HEALTH_INTERVAL", "2.5")
    monkeypatch.setenv("GPUTOPO_NO_UDEV", "true")
    monkeypatch.setenv("GPUTOPO_POD_RESOURCES_SOCKET", "")
    monkeypatch.setenv("GPUTOPO_POD_RESOURCES_INTERVAL", "30")
    monkeypatch.setenv("GPUTOPO_XID_WINDOW", "0")
    parser = build_parser()
    args = parser.parse_args(["run"])
    assert args.pod_resources_interval == 30.0
    assert args.xid_window == 0.0
    assert args.metrics_address == "127.0.0.1:9999"
    assert args.health_interval == 2.5
    assert args.no_udev is True
    assert args.pod_resources_socket == "/var/lib/kubelet/pod-resources/kubelet.sock"
    assert parser.parse_args(["run", "--health-interval", "4"]).health_interval == 4.0  # flag wins


def test_bad_environment_value_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUTOPO_JITTER", "lots")
    with pytest.raises(SystemExit, match=r"GPUTOPO_JITTER='lots': expected a number in \[0, 0.5\]"):
        build_parser()


def test_bad_environment_value_through_main_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GPUTOPO_JITTER", "lots")
    status, out, err = run(["run", "--once"], capsys)
    assert (status, out) == (2, "")
    assert err == "gputopo-agent: error: GPUTOPO_JITTER='lots': expected a number in [0, 0.5]\n"


def test_pod_resources_poll_defaults_to_every_ten_seconds() -> None:
    assert build_parser().parse_args(["run"]).pod_resources_interval == 10.0
    assert RunLoopConfig().pod_resources_interval_s == 10.0


def test_every_run_option_has_an_environment_twin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUTOPO_INTERVAL", "30")
    monkeypatch.setenv("GPUTOPO_MIG_STRATEGY", "mixed")
    monkeypatch.setenv("GPUTOPO_DRY_RUN", "true")
    monkeypatch.setenv("GPUTOPO_PUBLISH_NRT", "yes")
    monkeypatch.setenv("GPUTOPO_MOCK", "dgx-h100")
    monkeypatch.setenv("GPUTOPO_CONTEXT", "lab")
    args = build_parser().parse_args(["run"])
    assert args.interval == 30.0
    assert args.mig_strategy == "mixed"
    assert args.dry_run is True
    assert args.publish_nrt is True
    assert args.mock == "dgx-h100"
    assert args.context == "lab"
    assert build_parser().parse_args(["run", "--mig-strategy", "single"]).mig_strategy == "single"

    for action in _run_parser()._actions:
        if action.option_strings and not isinstance(action, argparse._HelpAction):
            assert env_name(max(action.option_strings, key=len)) in (action.help or "")


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("GPUTOPO_MIG_STRATEGY", "weird", "expected one of none, single, mixed"),
        ("GPUTOPO_DRY_RUN", "maybe", "expected true or false"),
        ("GPUTOPO_INTERVAL", "soon", r"expected a number in \[1, 604800\]"),
    ],
)
def test_bad_run_option_twin_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit, match=f"{variable}='{value}': {expected}"):
        build_parser()
