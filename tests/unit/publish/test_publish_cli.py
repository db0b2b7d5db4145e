"""The `labels` and `run` subcommands' argument handling: one-line errors, never tracebacks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gputopo.agent.cli import main


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
