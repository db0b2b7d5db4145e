"""TLS for the servers that face callers who must prove who they are (the extender)."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any


def mutual_tls_context(
    cert_file: str,
    key_file: str,
    client_ca_file: str,
    *,
    flags: tuple[str, str, str] = ("--tls-cert-file", "--tls-private-key-file", "--client-ca-file"),
) -> ssl.SSLContext:
    """A server context that requires a client certificate signed by ``client_ca_file``
    (TLS 1.2 at least): a caller without one never completes the handshake, so it cannot send
    a request at all. ValueError names the flag whose file could not be loaded."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as error:
        reason = error.strerror or str(error) if isinstance(error, OSError) else str(error)
        raise ValueError(
            f"{flags[0]} {cert_file!r} / {flags[1]} {key_file!r}: cannot load: {reason}"
        ) from None
    try:
        context.load_verify_locations(cafile=client_ca_file)
    except (OSError, ssl.SSLError) as error:
        reason = error.strerror or str(error) if isinstance(error, OSError) else str(error)
        raise ValueError(f"{flags[2]} {client_ca_file!r}: cannot load: {reason}") from None
    return context


def common_name(certificate: Mapping[str, Any] | None) -> str:
    """The subject CN of ``ssl.SSLSocket.getpeercert()``'s answer ('' without one)."""
    for rdn in (certificate or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""
