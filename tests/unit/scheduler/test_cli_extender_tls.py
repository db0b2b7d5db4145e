"""`gputopo-scheduler extender` refuses to serve bind to anyone unless told to, in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from gputopo.scheduler.cli import build_parser, main
from tests.controlplane.certs import CertificateAuthority
from tests.controlplane.kubeconfig import write_kubeconfig


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Path:
    """A kubeconfig that loads (nothing is ever asked of its server)."""
    ca = tmp_path / "ca.crt"
    ca.write_bytes(CertificateAuthority.create().cert_pem)
    return write_kubeconfig(tmp_path / "kubeconfig", "https://127.0.0.1:1", ca, token="t")


def _error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    return err


def test_without_tls_flags_the_extender_does_not_start(
    kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _error(["extender", f"--kubeconfig={kubeconfig}", "--listen=127.0.0.1:0"], capsys)
    assert err == (
        "gputopo-scheduler: error: the extender serves bind, which binds pods with its own "
        "credentials: give --tls-cert-file, --tls-private-key-file and --client-ca-file "
        "(mutual TLS, docs/extender.md), or --insecure-no-auth to serve any caller in plain HTTP"
    )


def test_half_the_tls_flags_or_tls_with_insecure_are_refused(
    kubeconfig: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["extender", f"--kubeconfig={kubeconfig}", "--listen=127.0.0.1:0"]
    err = _error([*base, f"--tls-cert-file={tmp_path}/a.crt"], capsys)
    assert err.startswith("gputopo-scheduler: error: the extender serves bind")
    err = _error([*base, "--insecure-no-auth", f"--client-ca-file={tmp_path}/ca.crt"], capsys)
    assert err == (
        "gputopo-scheduler: error: --insecure-no-auth: cannot be combined with "
        "--tls-cert-file, --tls-private-key-file or --client-ca-file"
    )


def test_an_unloadable_certificate_is_one_line_naming_the_flag(
    kubeconfig: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "extender",
        f"--kubeconfig={kubeconfig}",
        "--listen=127.0.0.1:0",
        "--tls-cert-file=/nonexistent/tls.crt",
        "--tls-private-key-file=/nonexistent/tls.key",
        f"--client-ca-file={tmp_path}/ca.crt",
    ]
    err = _error(argv, capsys)
    assert err.startswith(
        "gputopo-scheduler: error: --tls-cert-file '/nonexistent/tls.crt' / "
        "--tls-private-key-file '/nonexistent/tls.key': cannot load: "
    )


def test_tls_flags_have_environment_twins(monkeypatch: pytest.MonkeyPatch) -> None:
    twins = {
        "GPUTOPO_EXTENDER_TLS_CERT_FILE": ("tls_cert_file", "/tls/tls.crt", "/tls/tls.crt"),
        "GPUTOPO_EXTENDER_TLS_PRIVATE_KEY_FILE": ("tls_private_key_file", "/k", "/k"),
        "GPUTOPO_EXTENDER_CLIENT_CA_FILE": ("client_ca_file", "/tls/ca.crt", "/tls/ca.crt"),
        "GPUTOPO_EXTENDER_CLIENT_NAME": ("client_name", "kube-scheduler", ["kube-scheduler"]),
        "GPUTOPO_EXTENDER_INSECURE_NO_AUTH": ("insecure_no_auth", "true", True),
        "GPUTOPO_EXTENDER_PROBE_ADDRESS": ("probe_address", ":8889", ":8889"),
    }
    for name, (_, raw, _) in twins.items():
        monkeypatch.setenv(name, raw)
    args = build_parser().parse_args(["extender"])
    for attribute, _, expected in twins.values():
        assert getattr(args, attribute) == expected
