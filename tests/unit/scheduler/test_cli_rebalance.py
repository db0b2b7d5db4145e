"""`gputopo-scheduler rebalance` on the shipped sample and on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gputopo.scheduler.cli import main

SAMPLE = Path(__file__).resolve().parents[3] / "scheduler" / "samples" / "rebalance.yaml"


def test_the_sample_frees_the_node_the_budget_and_the_opt_out_leave(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["rebalance", "--cluster", str(SAMPLE)]) == 0
    plan = json.loads(capsys.readouterr().out)
    # h100-b would need two `inference` pods out (the budget allows one) and the opted-out
    # notebook: h100-c is freed instead, its pods proven to fit on a and b.
    assert plan == {
        "moves": [
            {
                "evict": ["batch/etl-0", "batch/inference-2"],
                "frees": "h100-c",
                "for": "ml/trainer-0",
                "then": {"batch/etl-0": "h100-a", "batch/inference-2": "h100-b"},
            }
        ],
        "unresolved": [],
    }


def test_text_output_says_what_to_evict_and_where_it_goes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["rebalance", "--cluster", str(SAMPLE), "-o", "text"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "for ml/trainer-0: free h100-c by evicting 2 pod(s)",
        "  evict batch/etl-0 -> h100-a",
        "  evict batch/inference-2 -> h100-b",
    ]


def test_limiting_the_namespaces_leaves_the_trainer_unresolved(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["rebalance", "--cluster", str(SAMPLE), "--namespace", "ml"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["moves"] == []
    assert [item["pod"] for item in plan["unresolved"]] == ["ml/trainer-0"]


@pytest.mark.parametrize(
    ("extra", "document", "message"),
    [
        (["--min-gpus", "0"], "", "--min-gpus 0: expected at least 1"),
        (["--max-evictions", "0"], "", "--max-evictions 0: expected at least 1"),
        (
            [],
            "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: p}\n"
            "spec: {minAvailable: lots}\n",
            "PodDisruptionBudget default/p: spec.minAvailable: expected an integer or a "
            "percentage, got 'lots'",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    document: str,
    message: str,
) -> None:
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(document or SAMPLE.read_text())
    assert main(["rebalance", "--cluster", str(cluster), *extra]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert message in err
