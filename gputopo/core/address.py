"""Listen addresses (``HOST:PORT``, ``[IPv6]:PORT``, ``:PORT``) parsed once, for every flag.

The agent's ``--metrics-address``, the scheduler's probe address and the extender's
``--listen``/``--probe-address`` all read through :func:`parse_address`, whose error names the
flag and shows an example.
"""

from __future__ import annotations

import ipaddress
import re


def parse_address(
    text: str, *, flag: str = "--metrics-address", example: str = "0.0.0.0:9465"
) -> tuple[str, int]:
    """``HOST:PORT``, ``[::1]:PORT`` or ``:PORT`` (all interfaces) -> (host, port).

    HOST is an IPv4 literal, a bracketed IPv6 literal or a DNS host name (RFC 1123); PORT is
    0..65535 (0: any free port). ValueError names ``flag``, says what is wrong and shows
    ``example`` for anything else (``:99999``, ``256.1.1.1:1``, ``[::1``)."""
    host, separator, port_text = text.rpartition(":")
    problem = None
    if not separator or not port_text.isascii() or not port_text.isdigit():
        problem = "no port"
    elif len(port_text) > 5 or int(port_text) > 65535:
        problem = "port out of range 0..65535"
    else:
        problem = _host_problem(host)
    if problem is not None:
        shown = repr(text) if len(text) <= 80 else repr(text[:80]) + "..."
        raise ValueError(f"{flag} {shown}: expected HOST:PORT or :PORT, e.g. {example} ({problem})")
    return (host.strip("[]") or "0.0.0.0", int(port_text))


_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _host_problem(host: str) -> str | None:
    """Why ``host`` is not an address to listen on, or None ("" is every interface)."""
    if not host:
        return None
    if host.startswith("[") or host.endswith("]") or ":" in host:
        inner = host[1:-1] if host.startswith("[") and host.endswith("]") else None
        if inner is None and (host.startswith("[") or host.endswith("]")):
            return "unbalanced brackets around an IPv6 address"
        if inner is None:
            return "an IPv6 address goes in brackets, e.g. [::1]:9465"
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            return f"{inner!r} is not an IPv6 address"
        return None
    if all(part.isdigit() for part in host.split(".")):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"{host!r} is not an IPv4 address"
        return None
    labels = host.removesuffix(".").split(".")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        return "the host is not an IP address or a host name"
    return None
