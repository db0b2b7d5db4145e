"""The plugin's command line: the project's flags, kubectl's argv, one-line errors."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from gputopo import __version__
from gputopo.core.kube import ClusterConfig
from gputopo.kubectl import live
from gputopo.kubectl.cli import build_parser, main
from tests.unit.agent.machines import dgx_h100
from tests.unit.kubectl.fake_api import FakeApi
from tests.unit.kubectl.kube_objects import node, pod


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        status = main(list(argv))
    except SystemExit as exit_:  # argparse's own exits (--version, usage errors)
        status = int(exit_.code or 0)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _kubeconfig(tmp_path: Path, server: str, namespace: str | None = None) -> Path:
    context: dict[str, str] = {"cluster": "c", "user": "u"}
    if namespace:
        context["namespace"] = namespace
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "ctx", "context": context}],
                "current-context": "ctx",
            }
        )
    )
    return path


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(capsys, "--version")
    assert (status, out) == (0, f"kubectl-gputopo {__version__}\n")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ((), "the following arguments are required: COMMAND"),
        (("nodes", "-o", "table"), "argument --output/-o: invalid choice: 'table'"),
        (("topo",), "the following arguments are required: NODE"),
        (("why", "p", "-o", "wide"), "invalid choice: 'wide'"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], expected: str
) -> None:
    status, out, err = _run(capsys, *argv)
    assert status == 2 and out == ""
    assert err.startswith("kubectl-gputopo: error: ") and expected in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    "argv",
    [
        ("-n", "ml", "--context", "c2", "why", "train-0"),
        ("why", "train-0", "-n", "ml", "--context", "c2"),
        ("--context", "c2", "why", "train-0", "--namespace", "ml"),
    ],
)
def test_connection_flags_go_before_or_after_the_subcommand(argv: tuple[str, ...]) -> None:
    args = build_parser().parse_args(list(argv))
    assert (args.namespace, args.context, args.pod, args.kubeconfig) == (
        "ml",
        "c2",
        "train-0",
        None,
    )


def test_an_unreachable_api_server_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = _kubeconfig(tmp_path, f"http://127.0.0.1:{_closed_port()}")
    for argv in (("nodes",), ("topo", "gpu-1"), ("why", "train-0")):
        status, out, err = _run(capsys, *argv, "--kubeconfig", str(kubeconfig))
        assert status == 1 and out == "", argv
        assert err.startswith("kubectl-gputopo: error: ") and "API server unreachable" in err
        assert err.count("\n") == 1 and "Traceback" not in err


def test_a_missing_kubeconfig_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = _run(capsys, "nodes", "--kubeconfig", str(tmp_path / "nope"))
    assert status == 2 and err.count("\n") == 1 and str(tmp_path / "nope") in err


def test_a_bad_profile_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text("weights: [1, 2]\n")
    status, _, err = _run(capsys, "why", "p", "--profile", str(profile))
    assert status == 2 and err.startswith("kubectl-gputopo: error: ") and str(profile) in err


@pytest.mark.parametrize("spelling", ["train", "pod/train", "pods/train", "po/train"])
def test_why_takes_the_pod_as_kubectl_spells_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], spelling: str
) -> None:
    api = FakeApi([pod("train", 1, "gpu-1", namespace="default")])
    api.config = ClusterConfig(server="https://unused", source="test", namespace=None)
    monkeypatch.setattr(live, "connect", lambda kubeconfig, context: api)
    status, out, _ = _run(capsys, "why", spelling)
    assert (status, out) == (0, "pod default/train is bound to node gpu-1: nothing to explain.\n")


def test_topo_takes_node_slash_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    api = FakeApi([node("gpu-1", dgx_h100())])
    monkeypatch.setattr(live, "connect", lambda kubeconfig, context: api)
    status, out, _ = _run(capsys, "topo", "node/gpu-1")
    assert status == 0 and out.startswith("Host:         gpu-1\n")
    status, _, err = _run(capsys, "topo", "pod/gpu-1")  # not a node: looked up as named
    assert status == 1 and err == 'kubectl-gputopo: error: node "pod/gpu-1" not found\n'
