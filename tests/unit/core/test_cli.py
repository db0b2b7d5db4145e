"""One CLI convention for both deployables, checked on both parsers side by side."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator, Sequence

import pytest

import gputopo
from gputopo.agent import cli as agent_cli
from gputopo.core.flags import EXIT_USAGE, OneLineErrorParser, count, seconds
from gputopo.scheduler import cli as scheduler_cli

Main = Callable[[Sequence[str] | None], int]
CLIS: dict[str, tuple[Main, Callable[[], argparse.ArgumentParser]]] = {
    "gputopo-agent": (agent_cli.main, agent_cli.build_parser),
    "gputopo-scheduler": (scheduler_cli.main, scheduler_cli.build_parser),
}
PRINTS = {"gputopo-agent": ("discover", "labels"), "gputopo-scheduler": ("simulate",)}
TALKS_TO_A_CLUSTER = {"gputopo-agent": ("run",), "gputopo-scheduler": ("run", "extender")}


@pytest.fixture(autouse=True)
def _no_twins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("GPUTOPO_LOG_FORMAT", "GPUTOPO_LOG_LEVEL", "GPUTOPO_KUBECONFIG"):
        monkeypatch.delenv(name, raising=False)
    yield


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def _run(main: Main, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        status = main(argv)
    except SystemExit as exit_:
        status = int(exit_.code or 0)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize("program", CLIS)
def test_version_is_the_program_and_the_package_version(
    program: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = _run(CLIS[program][0], ["--version"], capsys)
    assert (status, out) == (0, f"{program} {gputopo.__version__}\n")


@pytest.mark.parametrize("program", CLIS)
@pytest.mark.parametrize(
    "argv", [["--no-such-flag"], [], ["no-such-command"]], ids=["flag", "none", "command"]
)
def test_usage_errors_are_one_line_and_exit_2(
    program: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = _run(CLIS[program][0], argv, capsys)
    assert (status, out) == (2, "")
    assert err.startswith(f"{program}: error: ") and err.count("\n") == 1, err


@pytest.mark.parametrize("program", CLIS)
def test_subcommand_usage_errors_name_the_program_too(
    program: str, capsys: pytest.CaptureFixture[str]
) -> None:
    command = PRINTS[program][0]
    status, _, err = _run(CLIS[program][0], [command, "--output", "xml"], capsys)
    assert status == 2
    assert err.startswith(f"{program}: error: argument --output/-o: invalid choice: 'xml'")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("program", "argv", "names"),
    [
        ("gputopo-agent", ["discover", "--mock", "no-such-machine"], "--mock 'no-such-machine'"),
        ("gputopo-scheduler", ["simulate", "--cluster", "/nonexistent.yaml"], "nonexistent"),
    ],
)
def test_user_errors_are_one_line_naming_the_input_and_exit_2(
    program: str, argv: list[str], names: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = _run(CLIS[program][0], argv, capsys)
    assert (status, out) == (2, "")
    assert err.startswith(f"{program}: error: ") and names in err and err.count("\n") == 1


@pytest.mark.parametrize("program", CLIS)
def test_every_subcommand_takes_the_log_flags(program: str) -> None:
    parser = CLIS[program][1]()
    for name, subparser in _subcommands(parser).items():
        actions = {a.dest: a for a in subparser._actions}
        assert (actions["log_format"].choices, actions["log_format"].default) == (
            ("json", "text"),
            "json",
        ), name
        assert actions["log_level"].choices == ("debug", "info", "warning", "error"), name
        assert {"--log-format", "--log-level"} <= _options(subparser), name


@pytest.mark.parametrize("program", CLIS)
def test_subcommands_that_print_take_dash_o(program: str) -> None:
    subcommands = _subcommands(CLIS[program][1]())
    for name in PRINTS[program]:
        assert {"-o", "--output"} <= _options(subcommands[name]), name


@pytest.mark.parametrize("program", CLIS)
def test_subcommands_that_talk_to_a_cluster_take_the_same_kubeconfig_flags(program: str) -> None:
    subcommands = _subcommands(CLIS[program][1]())
    for name in TALKS_TO_A_CLUSTER[program]:
        assert {"--kubeconfig", "--context"} <= _options(subcommands[name]), name
        args = subcommands[name].parse_args(["--kubeconfig", "/k", "--context", "lab"])
        assert (args.kubeconfig, args.context) == ("/k", "lab")


@pytest.mark.parametrize(
    ("program", "argv"),
    [
        ("gputopo-agent", ["discover", "--mock", "l4-pcie"]),
        ("gputopo-scheduler", ["simulate", "--cluster", "scheduler/samples/cluster.yaml"]),
    ],
)
def test_dash_o_json_prints_a_json_document(
    program: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = _run(CLIS[program][0], [*argv, "-o", "json"], capsys)
    assert status == 0
    json.loads(out)


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e309", "0", "-1", "soon", "1e-400"])
def test_a_duration_flag_refuses_what_no_loop_can_run_with(text: str) -> None:
    parser = OneLineErrorParser(prog="gputopo-agent")
    parser.add_argument("--interval", type=seconds(high=86400))
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--interval", text])
    assert exit_info.value.code == EXIT_USAGE


def test_bounded_flags_accept_their_range_and_name_it() -> None:
    workers = count(1, 256)
    assert workers("16") == 16
    assert workers.__name__ == "an integer in [1, 256]"
    with pytest.raises(argparse.ArgumentTypeError, match=r"expected an integer in \[1, 256\]"):
        workers("100000")
    with pytest.raises(argparse.ArgumentTypeError):
        workers("9" * 5000)
    assert seconds(high=60)("0.5") == 0.5
    assert seconds(high=60).__name__ == "a number in (0, 60]"
