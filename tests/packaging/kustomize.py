"""A pinned kustomize for the manifest tests, built once from the Go module proxy into the user
cache (outside the clone, shared by clones) — the same way the control-plane binaries are.

``KUSTOMIZE_BIN`` names a kustomize binary to use instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from hack.testenv.tools import locked

KUSTOMIZE_MODULE = "sigs.k8s.io/kustomize/kustomize/v5"
# v5.8.1 is the newest release that builds with Go 1.24+ (v5.8.2 and later need Go 1.27).
KUSTOMIZE_VERSION = "v5.8.1"
REPO = Path(__file__).resolve().parents[2]


class KustomizeUnavailableError(RuntimeError):
    """No kustomize, and it cannot be built here."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gputopo" / "bin" / f"kustomize-{KUSTOMIZE_VERSION}"


def kustomize_binary() -> Path:
    """The pinned kustomize: $KUSTOMIZE_BIN, else the cached build, else build it now (~1 min)."""
    configured = os.environ.get("KUSTOMIZE_BIN")
    if configured:
        path = Path(configured)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise KustomizeUnavailableError(f"KUSTOMIZE_BIN={configured!r} is not an executable")
        return path
    directory = cache_dir()
    binary = directory / "kustomize"
    if binary.is_file():
        return binary
    go = shutil.which("go") or (
        "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").is_file() else None
    )
    if go is None:
        raise KustomizeUnavailableError(
            f"kustomize is not built and no `go` is on PATH to build {KUSTOMIZE_MODULE}@"
            f"{KUSTOMIZE_VERSION}; install Go or set KUSTOMIZE_BIN"
        )
    with locked(directory):
        if binary.is_file():
            return binary
        staging = directory / "staging"
        shutil.rmtree(staging, ignore_errors=True)
        env = dict(
            os.environ,
            GOBIN=str(staging),
            CGO_ENABLED="0",
            GOFLAGS="-buildvcs=false",
            GOTOOLCHAIN="local",
        )
        result = subprocess.run(
            [go, "install", f"{KUSTOMIZE_MODULE}@{KUSTOMIZE_VERSION}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if result.returncode != 0:
            raise KustomizeUnavailableError(
                f"go install {KUSTOMIZE_MODULE}@{KUSTOMIZE_VERSION} failed "
                f"(exit {result.returncode}):\n{result.stderr[-3000:]}"
            )
        (staging / "kustomize").rename(binary)
        shutil.rmtree(staging, ignore_errors=True)
    return binary


def build(directory: Path) -> str:
    """`kustomize build DIR` as YAML text; a failure names the directory and kustomize's error."""
    result = subprocess.run(
        [str(kustomize_binary()), "build", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"kustomize build {directory} failed: {result.stderr.strip()}")
    return result.stdout


def render(directory: Path) -> list[dict[str, Any]]:
    """The rendered objects of a kustomization, in kustomize's output order."""
    return [doc for doc in yaml.safe_load_all(build(directory)) if doc]


def overlay(
    where: Path,
    *,
    base: Path = REPO / "daemonset",
    components: tuple[str, ...] = (),
    namespace: str | None = None,
) -> Path:
    """Write an overlay of ``base`` (with repository components by name) into ``where``."""
    where.mkdir(parents=True, exist_ok=True)
    document: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(base, where)],
    }
    if components:
        document["components"] = [
            os.path.relpath(REPO / "daemonset" / "components" / name, where) for name in components
        ]
    if namespace:
        document["namespace"] = namespace
    (where / "kustomization.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return where


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} rendered"
    return matches[0]
