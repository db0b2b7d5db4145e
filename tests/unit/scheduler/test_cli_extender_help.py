"""`gputopo-scheduler extender --help` names every verb the extender serves (issue 19: it listed
two of four), so an operator wiring kube-scheduler's extender config sees preempt and bind."""

from __future__ import annotations

import pytest

from gputopo.scheduler.cli import build_parser


def test_extender_help_names_all_four_verbs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["extender", "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for verb in ("filter", "prioritize", "preempt", "bind"):
        assert f"<urlPrefix>/{verb}" in text


def test_the_command_list_names_all_four_verbs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "extender verbs (filter, prioritize, preempt, bind)" in text
