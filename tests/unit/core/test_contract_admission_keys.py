"""The admission policy allows exactly the label keys the contract says gputopo writes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from gputopo.core.contract import GFD_LABEL_KEYS, MIG_LABEL_PATTERN, Contract

POLICY = Path(__file__).resolve().parents[3] / "daemonset" / "admission" / "agent-node-policy.yaml"


def node_policy_variables() -> dict[str, str]:
    documents: list[dict[str, Any]] = list(yaml.safe_load_all(POLICY.read_text()))
    (policy,) = [
        d
        for d in documents
        if d["kind"] == "ValidatingAdmissionPolicy"
        and d["metadata"]["name"] == "gputopo-agent-node-writes"
    ]
    return {v["name"]: v["expression"] for v in policy["spec"]["variables"]}


def test_policy_gfd_keys_are_the_contracts() -> None:
    listed = re.findall(r"'([^']+)'", node_policy_variables()["gfdKeys"])
    assert sorted(listed) == sorted(GFD_LABEL_KEYS)


def test_policy_mig_label_pattern_is_the_contracts() -> None:
    expression = node_policy_variables()["migLabel"].strip()
    assert expression.startswith("'") and expression.endswith("'")
    assert expression[1:-1].replace("\\\\", "\\") == MIG_LABEL_PATTERN


def test_policy_taints_and_prefix_are_the_contracts() -> None:
    variables = node_policy_variables()
    contract = Contract()
    assert re.findall(r"'([^']+)'", variables["ownTaints"]) == sorted(
        contract.taint_keys(), reverse=True
    )
    assert variables["prefix"] == f"'{contract.prefix}/'"
