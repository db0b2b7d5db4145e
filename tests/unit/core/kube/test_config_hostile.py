"""Hostile kubeconfigs (issue 17): configuration that can never work is one KubeConfigError line
naming the file when it is loaded (a start-up error for both deployables, exit 2), in bounded
time; a valid configuration with an unreachable server is not an error until it is used."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gputopo.core.kube import KubeConfigError, KubeConnectionError, load_kubeconfig
from gputopo.core.kube.client import KubeClient
from gputopo.core.kube.config import (
    MAX_KUBECONFIG_BYTES,
    MAX_TOKEN_BYTES,
    ClusterConfig,
    load_config,
    load_incluster_config,
)


def kubeconfig(
    server: object = "https://127.0.0.1:6443",
    cluster: dict[str, Any] | None = None,
    user: dict[str, Any] | None = None,
    context: object = "main",
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": context,
        "contexts": [{"name": "main", "context": {"cluster": "c", "user": "u"}}],
        "clusters": [{"name": "c", "cluster": {"server": server, **(cluster or {})}}],
        "users": [{"name": "u", "user": user if user is not None else {"token": "abc"}}],
    }


NOT_PEM = base64.b64encode(b"not a certificate").decode()

HOSTILE: dict[str, tuple[dict[str, Any] | str, str]] = {
    "token-file-dev-zero": (
        kubeconfig(user={"tokenFile": "/dev/zero"}),
        f"token file /dev/zero: larger than {MAX_TOKEN_BYTES} bytes",
    ),
    "token-file-directory": (kubeconfig(user={"tokenFile": "/"}), "token file /: cannot read"),
    "token-file-missing": (
        kubeconfig(user={"tokenFile": "/nonexistent/token"}),
        "token file /nonexistent/token: cannot read",
    ),
    "ftp-server": (kubeconfig("ftp://127.0.0.1:21"), "is not a URL (http:// or https://)"),
    "port-out-of-range": (kubeconfig("https://127.0.0.1:99999"), "Port out of range"),
    "port-not-a-number": (kubeconfig("https://127.0.0.1:x"), "is not a URL"),
    "port-zero": (kubeconfig("https://127.0.0.1:0"), "port 0"),
    "broken-ipv6": (kubeconfig("https://[::1:6443"), "Invalid IPv6 URL"),
    "no-host": (kubeconfig("https://:6443"), "has no valid host"),
    "host-with-space": (kubeconfig("https://a b:6443"), "has no valid host"),
    "server-with-newline": (kubeconfig("https://h\n:6443"), "not printable ASCII"),
    "server-is-a-number": (kubeconfig(6443), "server 6443 is not a URL"),
    "token-with-crlf": (kubeconfig(user={"token": "abc\r\nX-Evil: 1"}), "token: a token is"),
    "token-with-nul": (kubeconfig(user={"token": "abc\0"}), "token: a token is"),
    "token-too-long": (kubeconfig(user={"token": "a" * (MAX_TOKEN_BYTES + 1)}), "longer than"),
    "token-is-a-map": (kubeconfig(user={"token": {"a": 1}}), "token is not a string"),
    "context-is-an-integer": (kubeconfig(context=5), "current-context 5 is not a string"),
    "context-names-a-list": (
        {**kubeconfig(), "contexts": [{"name": "main", "context": {"cluster": ["c"]}}]},
        "cluster ['c'] is not a name",
    ),
    "insecure-is-a-string": (
        kubeconfig(cluster={"insecure-skip-tls-verify": "yes"}),
        "insecure-skip-tls-verify: expected true or false",
    ),
    "tls-server-name-number": (
        kubeconfig(cluster={"tls-server-name": 5}),
        "tls-server-name: expected a host name",
    ),
    "ca-data-not-base64-string": (
        kubeconfig(cluster={"certificate-authority-data": 5}),
        "certificate-authority-data: not base64",
    ),
    "ca-path-with-nul": (
        kubeconfig(cluster={"certificate-authority": "a\0b"}),
        "certificate-authority: expected a file path",
    ),
    "deep-nesting": ("a: " + "[" * 1000 + "]" * 1000 + "\n", "nesting depth"),
    "deep-mapping": ("a: " + "{a: " * 100 + "1" + "}" * 100 + "\n", "nested deeper than"),
    "5000-digit-number": (
        "current-context: " + "9" * 5000 + "\n",
        "an integer of more than 4300 digits",
    ),
    "int-above-int64": ("current-context: " + "9" * 30 + "\n", "int64"),
    "nan": ("current-context: .nan\n", "not finite"),
    "latin-1": ("current-context: caf\xe9\n", "not UTF-8 text"),
}


def write(tmp_path: Path, document: dict[str, Any] | str) -> Path:
    path = tmp_path / "kubeconfig"
    if isinstance(document, str):
        path.write_bytes(document.encode("latin-1" if "\xe9" in document else "utf-8"))
    else:
        path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_kubeconfig_is_one_line_naming_the_file(tmp_path: Path, case: str) -> None:
    document, expected = HOSTILE[case]
    path = write(tmp_path, document)
    started = time.monotonic()
    with pytest.raises(KubeConfigError) as refused:
        load_kubeconfig(str(path))
    assert time.monotonic() - started < 5
    message = str(refused.value)
    assert message.startswith(f"kubeconfig {path}")
    assert "\n" not in message
    assert expected in message


def test_dev_zero_as_the_kubeconfig_is_refused_after_the_limit() -> None:
    with pytest.raises(KubeConfigError, match=rf"larger than {MAX_KUBECONFIG_BYTES} bytes"):
        load_kubeconfig("/dev/zero")


def test_a_directory_as_the_kubeconfig_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match="cannot read: Is a directory"):
        load_kubeconfig(str(tmp_path))


def test_ca_data_that_is_not_pem_fails_when_the_client_is_built(tmp_path: Path) -> None:
    config = load_kubeconfig(
        str(write(tmp_path, kubeconfig(cluster={"certificate-authority-data": NOT_PEM})))
    )
    with pytest.raises(KubeConfigError, match="TLS setup failed"):
        KubeClient(config)


def test_client_key_file_dev_zero_is_bounded(tmp_path: Path) -> None:
    config = ClusterConfig(
        server="https://127.0.0.1:6443",
        source="test",
        client_cert_data=b"-----BEGIN CERTIFICATE-----\n",
        client_key_file="/dev/zero",
    )
    with pytest.raises(KubeConfigError, match="larger than"):
        config.ssl_context()


def test_a_token_file_made_unreadable_later_is_a_connection_error(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    config = load_kubeconfig(str(write(tmp_path, kubeconfig(user={"tokenFile": str(token)}))))
    token.write_text("two\nlines")
    with pytest.raises(KubeConnectionError, match="a token is printable"):
        config.bearer_token()


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("10.0.0.1", "99999", "KUBERNETES_SERVICE_PORT='99999'"),
        ("10.0.0.1", "0", "KUBERNETES_SERVICE_PORT='0'"),
        ("10.0.0.1", "9" * 5000, "KUBERNETES_SERVICE_PORT='999"),
        ("a b", "443", "KUBERNETES_SERVICE_HOST='a b'"),
        ("[::1", "443", "KUBERNETES_SERVICE_HOST='[::1'"),
    ],
)
def test_in_cluster_environment_is_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: str, port: str, expected: str
) -> None:
    (tmp_path / "token").write_text("t")
    (tmp_path / "ca.crt").write_text("PEM")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    with pytest.raises(KubeConfigError) as refused:
        load_incluster_config(str(tmp_path))
    assert str(refused.value).startswith(f"in-cluster ServiceAccount: {expected}")


def test_a_valid_configuration_with_an_unreachable_server_loads(tmp_path: Path) -> None:
    path = write(tmp_path, kubeconfig("https://[fd00::1]:1", {"insecure-skip-tls-verify": True}))
    config = load_kubeconfig(str(path))
    assert config.server == "https://[fd00::1]:1"
    KubeClient(config).close()  # nothing is sent yet: a retry loop would try it


# -- the deployables: a start-up error, exit 2, one line ---------------------------------------


def run_cli(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ, "KUBERNETES_SERVICE_HOST": ""},
        check=False,
    )


@pytest.mark.parametrize(
    ("module", "command"),
    [
        ("gputopo.scheduler.cli", ("run", "--metrics-address", "127.0.0.1:0")),
        ("gputopo.scheduler.cli", ("extender", "--listen", "127.0.0.1:0")),
        ("gputopo.agent.cli", ("run", "--once", "--mock", "l4-pcie", "--node-name", "n")),
    ],
)
def test_deployables_stop_at_start_up_on_a_config_that_can_never_work(
    tmp_path: Path, module: str, command: tuple[str, ...]
) -> None:
    path = write(tmp_path, kubeconfig(user={"tokenFile": "/dev/zero"}))
    result = run_cli(module, *command, "--kubeconfig", str(path))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "token file /dev/zero: larger than" in lines[0]


# -- property-based: random structures over the kubeconfig schema -----------------------------

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(
        [
            "main",
            "c",
            "u",
            "https://127.0.0.1:6443",
            "http://[::1]:80/p",
            "https://[::1",
            "https://h:99999",
            "ftp://h",
            "abc",
            "a\r\nb",
            NOT_PEM,
            "/dev/null",
            "",
        ]
    ),
)
KEYS = st.sampled_from(
    [
        "name", "cluster", "user", "server", "token", "tokenFile", "certificate-authority",
        "certificate-authority-data", "insecure-skip-tls-verify", "tls-server-name",
        "client-certificate", "client-key", "client-certificate-data", "client-key-data",
        "exec", "proxy-url", "context", "namespace",
    ]
)  # fmt: skip
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(KEYS, children, max_size=4)
    ),
    max_leaves=12,
)
ENTRY = st.fixed_dictionaries(
    {"name": st.one_of(st.sampled_from(["main", "c", "u"]), SCALARS)},
    optional={"cluster": VALUES, "user": VALUES, "context": VALUES},
)
KUBECONFIGS = st.fixed_dictionaries(
    {},
    optional={
        "current-context": st.one_of(st.just("main"), SCALARS),
        "contexts": st.one_of(st.lists(ENTRY, max_size=3), VALUES),
        "clusters": st.one_of(st.lists(ENTRY, max_size=3), VALUES),
        "users": st.one_of(st.lists(ENTRY, max_size=3), VALUES),
    },
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(document=KUBECONFIGS)
def test_random_kubeconfigs_load_or_fail_in_one_line(
    tmp_path: Path, document: dict[str, Any]
) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(document))
    try:
        config = load_kubeconfig(str(path))
    except KubeConfigError as error:
        assert "\n" not in str(error)
        return
    try:
        KubeClient(config).close()
        config.bearer_token()
    except (KubeConfigError, KubeConnectionError) as error:
        assert "\n" not in str(error)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=300))
def test_random_bytes_as_a_kubeconfig_fail_in_one_line(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "kubeconfig"
    path.write_bytes(data)
    try:
        load_kubeconfig(str(path))
    except KubeConfigError as error:
        assert "\n" not in str(error)


def test_a_huge_context_name_gives_a_short_line(tmp_path: Path) -> None:
    path = write(tmp_path, kubeconfig())
    with pytest.raises(KubeConfigError) as refused:
        load_kubeconfig(str(path), context="x" * 100_000)
    assert "no context named 'xxxx" in str(refused.value)
    assert len(str(refused.value)) < 300


@pytest.mark.parametrize("field", ["certificate-authority", "client-certificate", "client-key"])
def test_a_fifo_as_a_tls_file_is_a_start_up_error_not_a_hang(tmp_path: Path, field: str) -> None:
    """OpenSSL would wait on a FIFO for ever; the files are read bounded first."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    user: dict[str, str] = {"token": "t"}
    cluster: dict[str, str] = {"server": "https://127.0.0.1:6443"}
    if field == "certificate-authority":
        cluster[field] = str(fifo)
    else:
        user = {"client-certificate": str(fifo), "client-key": str(fifo)}
    path = tmp_path / "config"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    started = time.monotonic()
    with pytest.raises(KubeConfigError, match="a pipe or socket, not a file"):
        load_config(str(path)).ssl_context()
    assert time.monotonic() - started < 5
