"""The pinned helm (hack/tools/helm, built by `make tools`) and the chart under charts/gputopo,
rendered the way a user renders it.

Like the control plane's binaries, helm is only located here: when it is missing the test fails
(never skips) and says to run `make tools`.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from hack.testenv import ToolsMissingError, locate

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "gputopo"
RELEASE = "gputopo"
NAMESPACE = "gputopo-system"


def helm_binary() -> Path:
    try:
        return locate().require("helm")
    except ToolsMissingError as error:
        pytest.fail(f"ToolsMissingError: {error}", pytrace=False)


def run(*args: str, values: Mapping[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    """`helm ARGS [-f values.json]`, its exit status and output kept for the caller to judge."""
    with tempfile.TemporaryDirectory(prefix="gputopo-helm-") as scratch:
        command = [str(helm_binary()), *args]
        if values is not None:
            values_file = Path(scratch) / "values.json"  # JSON is YAML: helm reads it as -f
            values_file.write_text(json.dumps(values), encoding="utf-8")
            command += ["-f", str(values_file)]
        env = {
            "HOME": scratch,
            "PATH": "/usr/bin:/bin",
            "HELM_CACHE_HOME": f"{scratch}/cache",
            "HELM_CONFIG_HOME": f"{scratch}/config",
            "HELM_DATA_HOME": f"{scratch}/data",
        }
        return subprocess.run(
            command, capture_output=True, text=True, timeout=120, check=False, env=env
        )


def template_text(values: Mapping[str, Any] | None = None, *, namespace: str = NAMESPACE) -> str:
    """`helm template gputopo charts/gputopo -n NAMESPACE`: the rendered YAML stream."""
    result = run("template", RELEASE, str(CHART), "--namespace", namespace, values=values)
    assert result.returncode == 0, f"helm template failed: {result.stderr.strip()}"
    return result.stdout


def template(
    values: Mapping[str, Any] | None = None, *, namespace: str = NAMESPACE
) -> list[dict[str, Any]]:
    """The objects `helm template` renders, in its order."""
    return [doc for doc in yaml.safe_load_all(template_text(values, namespace=namespace)) if doc]


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} rendered"
    return matches[0]
