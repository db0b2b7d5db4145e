"""Golden label sets: every built-in mock profile x MIG strategy, through the real discovery.

The golden files in golden/ are what ``gputopo-agent labels --mock <profile> --mig-strategy <s>``
prints. They were generated once and reviewed by hand; regenerate after an intended change with

    GPUTOPO_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/agent/test_cli_publish_golden.py

and review the diff like code.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
from pathlib import Path
from typing import Any

import pytest

from gputopo.agent.cli import discover_topology, machine_source, main
from gputopo.agent.cli_publish import labels_document
from gputopo.agent.publish.desired import PublishOptions
from gputopo.agent.topology import NodeTopology
from gputopo.core.validate import is_label_value, is_qualified_name

GOLDEN = Path(__file__).parent / "golden"
PROFILES = (
    "dgx-h100",
    "dgx-a100-mig",
    "a100-pcie-nvlink-pairs",
    "l4-pcie",
    "rtx4090-workstation",
    "gb200-nvl4",
    "dgx-h100-degraded",
    "cpu-only",
    "supermicro-hgx-h100",
    "hgx-h200-mig",
    "l4-single-socket",
    "a100-pcie-pair-missing-bridge",
)
STRATEGIES = ("none", "single", "mixed")


@functools.cache
def discovered(profile: str) -> NodeTopology:
    """Discovery of a built-in profile, as ``--mock`` does it (once per profile per session)."""
    args = argparse.Namespace(mock=profile, sysfs_root=None, node_name=None)
    with machine_source(args) as source:
        return discover_topology(source)


def document(profile: str, strategy: str) -> dict[str, Any]:
    return labels_document(discovered(profile), PublishOptions(mig_strategy=strategy))


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("profile", PROFILES)
def test_golden_labels(profile: str, strategy: str) -> None:
    result = document(profile, strategy)
    path = GOLDEN / f"{profile}.{strategy}.json"
    if os.environ.get("GPUTOPO_UPDATE_GOLDEN"):
        path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    assert path.exists(), f"{path.name} missing: run with GPUTOPO_UPDATE_GOLDEN=1 and review it"
    assert result == json.loads(path.read_text())


def test_labels_command_prints_the_golden_document(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["labels", "--mock", "dgx-a100-mig", "--mig-strategy", "mixed", "-o", "json"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert captured.out == (GOLDEN / "dgx-a100-mig.mixed.json").read_text()


@pytest.mark.parametrize("profile", PROFILES)
def test_every_published_key_and_value_is_valid(profile: str) -> None:
    result = document(profile, "mixed")
    for key, value in result["labels"].items():
        assert is_qualified_name(key), key
        assert is_label_value(value), (key, value)
    for taint in result["taints"]:
        assert is_qualified_name(taint["key"]) and is_label_value(taint["value"])
    for key in result["annotations"]:
        assert is_qualified_name(key)


def test_dgx_h100_topology_annotation_size() -> None:
    size = len(document("dgx-h100", "none")["annotations"]["gputopo.io/topology"].encode())
    assert size < 16 * 1024, size  # measured 3,207 bytes; the limit is 256 KiB
