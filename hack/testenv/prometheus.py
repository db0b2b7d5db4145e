"""Find a Prometheus server binary, or install Debian's `prometheus` package when we may."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


class PrometheusUnavailableError(RuntimeError):
    """No Prometheus server here, and none can be installed."""


def find() -> tuple[Path, str] | None:
    """(path, where it came from): PROMETHEUS_BIN first, then PATH, then Debian's location."""
    configured = os.environ.get("PROMETHEUS_BIN")
    if configured:
        path = Path(configured)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise PrometheusUnavailableError(
                f"PROMETHEUS_BIN={configured!r} is not an executable file"
            )
        return path, "PROMETHEUS_BIN"
    on_path = shutil.which("prometheus")
    if on_path:
        return Path(on_path), "PATH"
    debian = Path("/usr/bin/prometheus")
    if debian.is_file() and os.access(debian, os.X_OK):
        return debian, "PATH"
    return None


def install() -> Path:
    """`apt-get install prometheus` as root; anyone else is told what to do instead."""
    apt_get = shutil.which("apt-get")
    if os.geteuid() != 0 or apt_get is None:
        raise PrometheusUnavailableError(
            "no prometheus server found: install Debian's `prometheus` package "
            "(apt-get install prometheus) or set PROMETHEUS_BIN to a prometheus binary"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install_cmd = [apt_get, "install", "-y", "--no-install-recommends", "prometheus"]
    if subprocess.run(install_cmd, env=env, check=False).returncode != 0:
        subprocess.run([apt_get, "update"], env=env, check=True)
        subprocess.run(install_cmd, env=env, check=True)
    found = find()
    if found is None:
        raise PrometheusUnavailableError("apt-get installed prometheus but no binary was found")
    return found[0]
