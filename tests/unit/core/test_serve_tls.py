"""Mutual TLS on the probe server: a caller without a certificate from the client CA never
gets to send a request (the extender's only authentication)."""

from __future__ import annotations

import socket
import ssl
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gputopo.core.serve import Probes, ProbeServer
from gputopo.core.tls import mutual_tls_context
from tests.controlplane.certs import CertificateAuthority


@dataclass(frozen=True)
class Pki:
    server_ca: Path
    server_cert: Path
    server_key: Path
    client_ca: Path
    client: tuple[Path, Path]  # signed by the client CA, CN kube-scheduler
    other_name: tuple[Path, Path]  # signed by the client CA, CN someone-else
    rogue: tuple[Path, Path]  # CN kube-scheduler, signed by another CA


def _write(directory: Path, name: str, pem: tuple[bytes, bytes]) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    cert.write_bytes(pem[0])
    key.write_bytes(pem[1])
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    server_ca = CertificateAuthority.create("extender-serving-ca")
    client_ca = CertificateAuthority.create("extender-client-ca")
    rogue_ca = CertificateAuthority.create("extender-client-ca")  # same name, other key
    (directory / "server-ca.crt").write_bytes(server_ca.cert_pem)
    (directory / "client-ca.crt").write_bytes(client_ca.cert_pem)
    server_cert, server_key = _write(
        directory, "server", server_ca.issue("extender", ip_addresses=("127.0.0.1",), server=True)
    )
    return Pki(
        server_ca=directory / "server-ca.crt",
        server_cert=server_cert,
        server_key=server_key,
        client_ca=directory / "client-ca.crt",
        client=_write(directory, "client", client_ca.issue("kube-scheduler")),
        other_name=_write(directory, "other", client_ca.issue("someone-else")),
        rogue=_write(directory, "rogue", rogue_ca.issue("kube-scheduler")),
    )


@pytest.fixture
def server(pki: Pki) -> Iterator[ProbeServer]:
    tls = mutual_tls_context(str(pki.server_cert), str(pki.server_key), str(pki.client_ca))
    with ProbeServer(
        "127.0.0.1",
        0,
        probes=Probes(),
        routes={"bind": lambda verb, raw: (200, b'{"Error":""}', "application/json")},
        tls=tls,
        client_names=frozenset({"kube-scheduler"}),
    ) as running:
        yield running


def _client(pki: Pki, certificate: tuple[Path, Path] | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.server_ca))
    if certificate is not None:
        context.load_cert_chain(str(certificate[0]), str(certificate[1]))
    return context


def _post_bind(server: ProbeServer, context: ssl.SSLContext) -> bytes:
    request = urllib.request.Request(server.url + "/gputopo/bind", data=b"{}")
    with urllib.request.urlopen(request, timeout=5, context=context) as response:
        body: bytes = response.read()
        return body


def test_a_caller_with_a_client_certificate_from_the_ca_is_served(
    pki: Pki, server: ProbeServer
) -> None:
    assert server.url.startswith("https://127.0.0.1:")
    assert _post_bind(server, _client(pki, pki.client)) == b'{"Error":""}'


@pytest.mark.parametrize("who", ["no certificate", "another CA", "a CN not allowed"])
def test_a_caller_without_an_accepted_certificate_cannot_send_a_request(
    pki: Pki, server: ProbeServer, who: str
) -> None:
    certificate = {
        "no certificate": None,
        "another CA": pki.rogue,
        "a CN not allowed": pki.other_name,
    }
    with pytest.raises(OSError):  # ssl.SSLError, a reset, or urllib's URLError around them
        _post_bind(server, _client(pki, certificate[who]))
    # The server keeps serving the next caller.
    assert _post_bind(server, _client(pki, pki.client)) == b'{"Error":""}'


def test_plain_http_to_the_tls_port_gets_no_answer(server: ProbeServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"POST /gputopo/bind HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        received = b""
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except ConnectionResetError:
            pass
    assert b"HTTP/1.1" not in received


def test_unloadable_files_name_their_flag(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^--tls-cert-file '/nonexistent' / "):
        mutual_tls_context("/nonexistent", str(pki.server_key), str(pki.client_ca))
    garbage = tmp_path / "ca.crt"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ValueError, match=r"^--client-ca-file '.*ca\.crt': cannot load"):
        mutual_tls_context(str(pki.server_cert), str(pki.server_key), str(garbage))
