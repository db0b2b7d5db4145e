"""Hostile scheduler flags and environment twins (issue 17): one line, exit 2, before any API call.

`run` and `extender` are given ``--kubeconfig /nonexistent``: a flag that got past its check
would end in the kubeconfig error instead, so every case here proves the flag was refused first.
"""

from __future__ import annotations

import contextlib
import io
import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gputopo.scheduler.cli import build_parser, main

RUN = ["run", "--kubeconfig", "/nonexistent"]
EXTENDER = ["extender", "--kubeconfig", "/nonexistent", "--listen", ":0"]
PROMETHEUS = ["--prometheus-url", "http://127.0.0.1:1"]


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """argparse's refusal: SystemExit(2) and one line on stderr."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


NUMERIC = [
    ("--bind-workers", "100000", "expected an integer in [1, 256]"),
    ("--bind-workers", "0", "expected an integer in [1, 256]"),
    ("--bind-workers", "9" * 5000, "expected an integer in [1, 256]"),
    ("--gang-backoff", "nan", "expected a number in [0, 86400]"),
    ("--gang-backoff", "inf", "expected a number in [0, 86400]"),
    ("--gang-backoff", "-1", "expected a number in [0, 86400]"),
    ("--nrt-max-age", "1e309", "expected a number in [0, 604800]"),
    ("--lease-duration", "nan", "expected a number in [0.1, 3600]"),
    ("--renew-deadline", "1e-9", "expected a number in [0.1, 3600]"),
    ("--retry-period", "0", "expected a number in [0.1, 3600]"),
    ("--load-window", "0", "expected a number in (0, 604800]"),
    ("--load-window", "nan", "expected a number in (0, 604800]"),
    ("--load-timeout", "-1", "expected a number in (0, 600]"),
    ("--load-refresh-interval", "1e-9", "expected a number in [0.1, 86400]"),
    ("--load-max-age", "inf", "expected a number in (0, 604800]"),
]


# `extender` has the load flags only; `run` has them all.
NUMERIC_CASES = [(RUN, *case) for case in NUMERIC] + [
    (EXTENDER, *case) for case in NUMERIC if case[0].startswith("--load-")
]


@pytest.mark.parametrize(("command", "flag", "value", "expected"), NUMERIC_CASES)
def test_numeric_flag_out_of_range_is_one_line(
    capsys: pytest.CaptureFixture[str], command: list[str], flag: str, value: str, expected: str
) -> None:
    err = _usage_error([*command, f"{flag}={value}"], capsys)
    assert err.startswith(f"gputopo-scheduler: error: argument {flag}: {expected}")


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("GPUTOPO_BIND_WORKERS", "100000", "expected an integer in [1, 256]"),
        ("GPUTOPO_GANG_BACKOFF", "nan", "expected a number in [0, 86400]"),
        ("GPUTOPO_LOAD_WINDOW", "0", "expected a number in (0, 604800]"),
        ("GPUTOPO_RETRY_PERIOD", "inf", "expected a number in [0.1, 3600]"),
        ("GPUTOPO_SCHEDULER_NAME", "Not A Name", "expected a DNS-1123 subdomain"),
        ("GPUTOPO_LEASE_NAMESPACE", "kube_system", "expected a DNS-1123 label"),
        ("GPUTOPO_LEADER_ELECT", "maybe", "expected true or false"),
    ],
)
def test_bad_twin_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as exit_:
        build_parser()
    assert exit_.value.code == 2
    assert str(exit_.value) == f"gputopo-scheduler: error: {variable}={value!r}: {expected}"


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--scheduler-name", "", "expected a DNS-1123 subdomain"),
        ("--scheduler-name", "Gputopo", "expected a DNS-1123 subdomain"),
        ("--scheduler-name", "a" * 254, "expected a DNS-1123 subdomain"),
        ("--scheduler-name", "x\n", "expected a DNS-1123 subdomain"),
        ("--lease-name", "-lease", "expected a DNS-1123 subdomain"),
        ("--lease-namespace", "a.b", "expected a DNS-1123 label"),
    ],
)
def test_names_follow_kubernetes_rules(
    capsys: pytest.CaptureFixture[str], flag: str, value: str, expected: str
) -> None:
    err = _usage_error([*RUN, f"{flag}={value}"], capsys)
    assert err.startswith(f"gputopo-scheduler: error: argument {flag}: {expected}")


def test_good_names_and_numbers_are_taken() -> None:
    args = build_parser().parse_args(
        [
            "run",
            "--scheduler-name=gpu-batch.example.com",
            "--lease-namespace=gputopo-system",
            "--bind-workers=256",
            "--gang-backoff=0",
            "--nrt-max-age=0",
            "--load-window=0.5",
        ]
    )
    assert args.scheduler_name == "gpu-batch.example.com"
    assert (args.bind_workers, args.gang_backoff, args.nrt_max_age) == (256, 0.0, 0.0)


LOAD = [
    ("--load-threshold=gpu_utilization=nan", "--load-threshold gpu_utilization=nan: expected"),
    ("--load-threshold=gpu_utilization=2", "--load-threshold gpu_utilization=2: expected"),
    ("--load-threshold=gpu_utilization=-0.5", "--load-threshold gpu_utilization=-0.5"),
    ("--load-threshold==2", "--load-threshold '=2': expected NAME=VALUE"),
    ("--load-threshold=foo=1", "--load-threshold foo: expected one of gpu_utilization"),
    ("--load-query=node_cpu=rate(x[{window}]", "--load-query node_cpu: unclosed '('"),
    ("--load-query=node_cpu=max(x[{windw}])", "--load-query node_cpu: unknown placeholder"),
    ('--load-query=node_cpu=x{a="b}', "--load-query node_cpu: unterminated string"),
    ("--load-query=node_cpu=x)", "--load-query node_cpu: unbalanced ')'"),
    ("--load-query=node_cpu=  ", "--load-query node_cpu: expected a PromQL expression"),
    ("--load-query=disk=up", "--load-query disk: expected one of"),
]


@pytest.mark.parametrize("prometheus", [True, False], ids=["with-url", "without-url"])
@pytest.mark.parametrize("command", [RUN, EXTENDER], ids=["run", "extender"])
@pytest.mark.parametrize(("flag", "expected"), LOAD)
def test_bad_load_flag_is_one_line_with_or_without_prometheus(
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    prometheus: bool,
    flag: str,
    expected: str,
) -> None:
    argv = [*command, *(PROMETHEUS if prometheus else []), flag]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"gputopo-scheduler: error: {expected}")


def _profile(tmp_path: Path, content: bytes) -> str:
    path = tmp_path / "profile.yaml"
    path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"scores: {NodeAffinity: \xff}\n", "not UTF-8 text"),
        ("scores: {}\n".encode("utf-16"), "not UTF-8 text"),
        (b"scores: " + b"{a: " * 200 + b"1" + b"}" * 200 + b"\n", "nested deeper than"),
        (b"scores: {NodeAffinity: " + b"9" * 5000 + b"}\n", "not valid YAML"),
        (b"scores: {NodeAffinity: .nan}\n", "is not finite"),
        (b"reservation: {minGpus: 100000}\n", "reservation.minGpus: expected an integer in"),
    ],
)
@pytest.mark.parametrize("command", [RUN, EXTENDER, ["simulate", "--cluster", "/dev/null"]])
def test_hostile_profile_is_one_line_naming_it(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    content: bytes,
    expected: str,
) -> None:
    path = _profile(tmp_path, content)
    assert main([*command, "--profile", path]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"gputopo-scheduler: error: profile {path}: ")
    assert expected in err


def test_profile_dev_zero_is_refused_at_the_size_limit(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*RUN, "--profile", "/dev/zero"]) == 2
    assert capsys.readouterr().err == (
        "gputopo-scheduler: error: profile /dev/zero: larger than 1048576 bytes, "
        "the limit for a profile\n"
    )


def test_entry_point_refuses_hostile_flags_without_a_traceback() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "gputopo.scheduler.cli", *RUN, "--bind-workers", "100000"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2
    assert completed.stderr.count("\n") == 1
    assert "Traceback" not in completed.stderr


_RANGES = {
    "--bind-workers": (1, 256),
    "--gang-backoff": (0.0, 86400.0),
    "--nrt-max-age": (0.0, 7 * 86400.0),
    "--lease-duration": (0.1, 3600.0),
    "--load-window": (0.0, 7 * 86400.0),
    "--load-timeout": (0.0, 600.0),
    "--load-refresh-interval": (0.1, 86400.0),
    "--load-max-age": (0.0, 7 * 86400.0),
}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    flag=st.sampled_from(sorted(_RANGES)),
    value=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.integers(-(2**70), 2**70).map(str),
        st.sampled_from(["nan", "-inf", "1e309", "1e-9", "0", "-0", "", " 5", "0x10", "1_000"]),
        st.text(max_size=8),
    ),
)
def test_random_numeric_flag_values_are_in_range_or_refused(flag: str, value: str) -> None:
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            args = build_parser().parse_args(["run", f"{flag}={value}"])
        except SystemExit as exit_:
            assert exit_.code == 2
            assert stderr.getvalue().count("\n") == 1
            return
    parsed = getattr(args, flag.lstrip("-").replace("-", "_"))
    low, high = _RANGES[flag]
    assert math.isfinite(parsed)
    assert low <= parsed <= high
