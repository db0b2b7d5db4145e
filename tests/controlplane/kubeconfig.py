"""Kubeconfig files for the components (and for anything a test runs as a subprocess)."""

from __future__ import annotations

from pathlib import Path

import yaml


def write_kubeconfig(
    path: Path,
    server: str,
    ca_file: Path,
    *,
    token: str | None = None,
    client_cert_file: Path | None = None,
    client_key_file: Path | None = None,
    user: str = "gputopo-test",
) -> Path:
    """One cluster, one user, one context; token or client certificate authentication."""
    credentials: dict[str, str] = {}
    if token is not None:
        credentials["token"] = token
    if client_cert_file is not None and client_key_file is not None:
        credentials["client-certificate"] = str(client_cert_file)
        credentials["client-key"] = str(client_key_file)
    if not credentials:
        raise ValueError(f"kubeconfig {path}: give a token or a client certificate and key")
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "gputopo-test",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [
            {"name": "gputopo-test", "context": {"cluster": "gputopo-test", "user": user}}
        ],
        "current-context": "gputopo-test",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    path.chmod(0o600)
    return path
