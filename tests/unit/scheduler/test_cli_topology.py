"""`gputopo-scheduler topology --kueue` on files: the document on stdout, notes on stderr."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gputopo.scheduler.cli import main

NODES = (
    """\
apiVersion: v1
kind: List
items:
"""
    + "".join(
        f"""\
- apiVersion: v1
  kind: Node
  metadata:
    name: n{i}
    labels: {{kubernetes.io/hostname: n{i}, nvidia.com/gpu.clique: "c{i // 2}"}}
  status: {{allocatable: {{cpu: "64", memory: 512Gi, pods: "110", nvidia.com/gpu: "4"}}}}
"""
        for i in range(4)
    )
    + """\
- apiVersion: v1
  kind: Node
  metadata: {name: lone, labels: {kubernetes.io/hostname: lone}}
  status: {allocatable: {cpu: "64", memory: 512Gi, pods: "110", nvidia.com/gpu: "8"}}
"""
)


def test_yaml_topology_on_stdout_and_the_unlabelled_node_named_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = tmp_path / "nodes.yaml"
    cluster.write_text(NODES)
    assert main(["topology", "--kueue", "--cluster", str(cluster), "--name", "gpus"]) == 0
    out, err = capsys.readouterr()
    document = yaml.safe_load(out)
    assert document["kind"] == "Topology"
    assert document["metadata"]["name"] == "gpus"
    assert document["spec"]["levels"] == [
        {"nodeLabel": "nvidia.com/gpu.clique"},
        {"nodeLabel": "kubernetes.io/hostname"},
    ]
    assert err.splitlines() == [
        "gputopo-scheduler topology: level nvidia.com/gpu.clique: 1 of 5 nodes lack it (lone); "
        "Kueue's topology-aware scheduling leaves them out"
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["topology", "--cluster", "{cluster}"], "the following arguments are required: --kueue"),
        (["topology", "--kueue", "--cluster", "{cluster}", "--name", "Bad_Name"], "--name"),
        (["topology", "--kueue", "--cluster", "{cluster}", "--level", "a b"], "--level 'a b'"),
        (["topology", "--kueue", "--cluster", "{missing}"], "missing.yaml"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    cluster = tmp_path / "nodes.yaml"
    cluster.write_text(NODES)
    args = [a.format(cluster=cluster, missing=tmp_path / "missing.yaml") for a in argv]
    try:
        code = main(args)
    except SystemExit as exit_info:  # argparse's own errors
        code = int(exit_info.code or 0)
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("gputopo-scheduler: error: ")
    assert message in err
