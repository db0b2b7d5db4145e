"""Hostile agent flags and their environment twins (issue 17): each is a usage error, exit 2, one
line naming the flag or variable, before any cluster is contacted."""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gputopo.agent.cli import build_parser, main
from gputopo.agent.cli_machine import node_name
from gputopo.agent.cli_publish import (
    HEALTH_INTERVAL,
    INTERVAL,
    JITTER,
    MIN_TRIGGER_INTERVAL,
    POD_RESOURCES_INTERVAL,
    XID_WINDOW,
)
from gputopo.core.address import parse_address
from gputopo.core.flags import Bounded

# Reaches no cluster: every case fails while the command line is parsed or checked.
RUN = ["run", "--mock", "l4-pcie", "--dry-run", "--node-name", "n", "--kubeconfig", "/nonexistent"]

BAD_FLAGS = [
    ("--interval", "nan"),
    ("--interval", "inf"),
    ("--interval", "1e309"),
    ("--interval", "1e-9"),
    ("--interval", "0"),
    ("--interval", "9" * 5000),
    ("--jitter", "nan"),
    ("--jitter", "-0.1"),
    ("--jitter", "0.6"),
    ("--health-interval", "0"),
    ("--health-interval", "-1"),
    ("--health-interval", "nan"),
    ("--xid-window", "-1"),
    ("--xid-window", "nan"),
    ("--xid-window", "1e9"),
    ("--pod-resources-interval", "0"),
    ("--min-trigger-interval", "-1"),
    ("--min-trigger-interval", "inf"),
    ("--node-name", "../../x"),
    ("--node-name", "Upper"),
    ("--node-name", "a" * 254),
    ("--node-name", ""),
]


@pytest.mark.parametrize(("flag", "value"), BAD_FLAGS)
def test_bad_flag_is_one_usage_line(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args([*RUN, flag, value])
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"gputopo-agent: error: argument {flag}: expected ")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GPUTOPO_INTERVAL", "nan"),
        ("GPUTOPO_JITTER", "-0.1"),
        ("GPUTOPO_HEALTH_INTERVAL", "0"),
        ("GPUTOPO_XID_WINDOW", "nan"),
        ("GPUTOPO_POD_RESOURCES_INTERVAL", "0"),
        ("GPUTOPO_NODE_NAME", "../../x"),
        ("GPUTOPO_ONCE", "maybe"),
        ("GPUTOPO_DRY_RUN", "2"),
        ("GPUTOPO_NO_UDEV", "nah"),
        ("GPUTOPO_PUBLISH_NRT", "yes please"),
    ],
)
def test_bad_twin_is_one_line_exit_2(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(variable, value)
    assert main(["run", "--mock", "l4-pcie", "--dry-run"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [lines[0]]
    assert lines[0].startswith(f"gputopo-agent: error: {variable}={value!r}: expected ")


def test_node_name_from_the_downward_api_is_checked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NODE_NAME", "../../x")
    monkeypatch.delenv("GPUTOPO_NODE_NAME", raising=False)
    assert main(["run", "--mock", "l4-pcie", "--once", "--kubeconfig", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "NODE_NAME: expected a node name" in err


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        (":99999", "port out of range"),
        ("256.1.1.1:1", "'256.1.1.1' is not an IPv4 address"),
        ("[::1", "unbalanced brackets"),
        ("::1:9465", "in brackets"),
        ("[::g]:1", "is not an IPv6 address"),
        ("a_b:1", "not an IP address or a host name"),
        ("9465", "no port"),
        ("x:" + "9" * 5000, "port out of range"),
    ],
)
def test_bad_address_names_the_flag_and_why(address: str, reason: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_address(address)
    message = str(refused.value)
    assert message.startswith("--metrics-address ")
    assert reason in message and "\n" not in message


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (":9465", ("0.0.0.0", 9465)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:9465", ("::1", 9465)),
        ("[fe80::1%eth0]:80", ("fe80::1%eth0", 80)),
        ("metrics.example.com:80", ("metrics.example.com", 80)),
    ],
)
def test_good_addresses_still_parse(address: str, expected: tuple[str, int]) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize(
    "argv",
    [
        ["--metrics-address", ":99999"],
        ["--metrics-address", "256.1.1.1:1"],
        ["--metrics-address", "[::1"],
    ],
)
def test_run_loop_refuses_a_bad_metrics_address_before_serving(argv: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gputopo.agent.cli", *RUN, "--no-udev", *argv],
        capture_output=True,
        text=True,
        timeout=20,
        env={k: v for k, v in os.environ.items() if not k.startswith("GPUTOPO_")},
        check=False,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"gputopo-agent: error: --metrics-address {argv[1]!r}")


def test_cli_interval_nan_is_exit_2_and_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gputopo.agent.cli", *RUN, "--interval", "nan"],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "argument --interval: expected a number in [1, 604800], got 'nan'" in result.stderr


# -- property-based: numbers at the edges ------------------------------------------------------

EDGE_NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["nan", "-nan", "inf", "-inf", "1e309", "-1e309", "1e-9", "0", "-0", "1_0"]),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.text(max_size=12),
).map(str)
RANGES: list[Bounded] = [
    INTERVAL,
    HEALTH_INTERVAL,
    POD_RESOURCES_INTERVAL,
    MIN_TRIGGER_INTERVAL,
    JITTER,
    XID_WINDOW,
]


@settings(max_examples=300, deadline=None)
@given(text=EDGE_NUMBERS, kind=st.sampled_from(RANGES))
def test_numeric_flags_accept_only_finite_numbers_in_range(text: str, kind: Bounded) -> None:
    try:
        value = kind(text)
    except argparse.ArgumentTypeError as error:
        assert str(error).startswith(f"expected {kind.__name__}")
        return
    assert math.isfinite(value)
    assert kind.low <= value <= kind.high


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300))
def test_node_names_are_dns_subdomains_or_refused(text: str) -> None:
    try:
        accepted = node_name(text)
    except argparse.ArgumentTypeError as error:
        assert "\n" not in str(error) or "\n" in text
        return
    assert accepted == text and len(text) <= 253
    assert "/" not in text and ".." not in text and text == text.lower()
