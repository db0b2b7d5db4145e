"""`gputopo-scheduler simulate` end to end: the shipped sample, output shapes, error paths."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from gputopo.scheduler import simulate as simulate_module
from gputopo.scheduler.cli import main
from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.simulate import cluster_from_objects, load_cluster
from tests.unit.scheduler.sched_builders import node, pod

SAMPLE = str(resources.files("scheduler").joinpath("samples/cluster.yaml"))


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_sample_cluster_placements(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = _run(capsys, "simulate", "--cluster", SAMPLE, "--output", "json")
    assert status == 0, err
    pods = {entry["pod"]: entry for entry in json.loads(out)["pods"]}
    assert list(pods) == [  # file order
        "ml/llm-pretrain-0",
        "ml/llm-pretrain-1",
        "ml/finetune-13b",
        "ml/notebook-alice",
        "batch/embed-server-1",
        "batch/embed-server-2",
        "batch/smoke-test",
        "ml/sweep-42",
    ]
    assert pods["ml/llm-pretrain-0"]["node"] == "dgx-h100-b"  # SLA Gt 950, 8 free GPUs
    assert pods["ml/llm-pretrain-1"]["node"] is None  # the first one took the machine
    assert pods["ml/llm-pretrain-1"]["message"].startswith("0/6 nodes are available: ")
    assert "2 Insufficient nvidia.com/gpu" in pods["ml/llm-pretrain-1"]["message"]
    assert pods["ml/finetune-13b"]["node"] == "dgx-h100-a"  # preferred H100
    assert pods["ml/notebook-alice"]["node"] == "a100-mig-a"
    assert pods["batch/embed-server-1"]["node"] == "hgx-a100-a"  # zone-a: spread
    assert pods["batch/smoke-test"]["message"] == (
        "0/6 nodes are available: 1 node(s) had untolerated taint {gputopo.io/sla: 850}, "
        "1 node(s) had untolerated taint {gputopo.io/sla: 900}, "
        "1 node(s) had untolerated taint {gputopo.io/sla: 930}, "
        "1 node(s) had untolerated taint {gputopo.io/sla: 960}, "
        "1 node(s) had untolerated taint {gputopo.io/sla: 990}, "
        "1 node(s) were unschedulable."
    )
    assert pods["ml/sweep-42"]["message"] == (
        "Scheduling is blocked due to non-empty scheduling gates"
    )
    assert all("nodes" not in entry for entry in pods.values())


def test_explain_lists_every_node(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(capsys, "simulate", "--cluster", SAMPLE, "--output", "json", "--explain")
    assert status == 0
    first = json.loads(out)["pods"][0]
    assert set(first["nodes"]) == {
        "dgx-h100-a",
        "dgx-h100-b",
        "dgx-h100-c",
        "hgx-a100-a",
        "a100-mig-a",
        "l4-a",
    }
    chosen = first["nodes"]["dgx-h100-b"]
    assert chosen["feasible"] is True and chosen["reasons"] == [] and chosen["score"] > 0
    assert first["nodes"]["dgx-h100-c"] == {
        "feasible": False,
        "reasons": ["node(s) were unschedulable"],
        "score": 0,
    }


def test_text_output_reads_well(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(capsys, "simulate", "--cluster", SAMPLE)
    assert status == 0
    assert "ml/llm-pretrain-0     ->  dgx-h100-b" in out
    assert "not placed: 0/6 nodes are available:" in out
    assert out.rstrip().endswith("placed 4 of 8 pods")


def test_earlier_placements_are_load_and_list_input_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    items = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "only"},
            "status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "10"}},
        },
    ] + [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"p{i}"},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "600m"}}}]},
        }
        for i in range(2)
    ]
    path = tmp_path / "list.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    status, out, _ = _run(capsys, "simulate", "--cluster", str(path), "--output", "json")
    assert status == 0
    result = json.loads(out)["pods"]
    assert [r["node"] for r in result] == ["only", None]
    assert result[1]["message"] == "0/1 nodes are available: 1 Insufficient cpu."


def test_several_cluster_files_are_read_in_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "nodes.yaml").write_text(
        "kind: Node\nmetadata: {name: n}\nstatus: {allocatable: {cpu: '1', pods: '5'}}\n"
    )
    (tmp_path / "pods.yaml").write_text(
        "kind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c}]}\n---\n"
        "kind: Service\nmetadata: {name: s}\n"
    )
    status, out, err = _run(
        capsys,
        "simulate",
        "--cluster",
        str(tmp_path / "nodes.yaml"),
        "--cluster",
        str(tmp_path / "pods.yaml"),
        "--output",
        "json",
    )
    assert status == 0
    assert json.loads(out)["pods"][0]["node"] == "n"
    assert "kind Service is not simulated" in err


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            "kind: Node\nmetadata: {name: n}\nspec: {taints: [{key: k, effect: Never}]}\n",
            "document 1: Node n: spec.taints[0].effect: unknown effect 'Never'",
        ),
        (
            "kind: Pod\nmetadata: {name: p, namespace: ml}\nspec:\n  containers:\n"
            "  - {name: c, resources: {limits: {nvidia.com/gpu: lots}}}\n",
            "document 1: Pod ml/p: spec.containers[0].resources.limits.nvidia.com/gpu: "
            "invalid quantity 'lots'",
        ),
        (
            "kind: Node\nmetadata: {name: n}\n---\nkind: Node\nmetadata: {name: n}\n",
            "document 2: Node n: defined twice (first at",
        ),
        (
            "kind: Pod\nmetadata: {name: p}\nspec: {priorityClassName: gold, containers: []}\n",
            "Pod default/p: spec.priorityClassName: no PriorityClass with name 'gold' was found",
        ),
        ("- just\n- a list\n", "document 1: expected a Kubernetes object"),
        ("metadata: {name: x}\n", "document 1: kind: must be set"),
        ("kind: Node\nmetadata: {name: [\n", "not valid YAML"),
    ],
)
def test_malformed_input_is_one_line_naming_file_and_object(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    status, out, err = _run(capsys, "simulate", "--cluster", str(path))
    assert status == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"gputopo-scheduler: error: {path}")
    assert expected in err


def test_missing_file_and_bad_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = _run(capsys, "simulate", "--cluster", str(tmp_path / "nope.yaml"))
    assert status == 2
    assert "nope.yaml: cannot read" in err
    profile = tmp_path / "profile.yaml"
    profile.write_text("scores: {NodeAffinity: -1}\n")
    status, _, err = _run(capsys, "simulate", "--cluster", SAMPLE, "--profile", str(profile))
    assert status == 2
    assert f"profile {profile}: scores.NodeAffinity" in err


def test_entry_point_prints_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("kind: Pod\nmetadata: {name: p}\nspec: {containers: 3}\n")
    completed = subprocess.run(
        [sys.executable, "-m", "gputopo.scheduler.cli", "simulate", "--cluster", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    assert completed.stderr.strip().endswith("spec.containers: expected a list, got int")


def _objects(*docs: str) -> list[tuple[str, dict[str, object]]]:
    return [("live cluster", yaml.safe_load(doc)) for doc in docs]


def test_cluster_from_objects_is_the_cluster_load_cluster_builds(tmp_path: Path) -> None:
    docs = (
        "kind: Node\nmetadata: {name: n1}\nstatus: {allocatable: {cpu: '4', pods: '10'}}\n",
        "kind: Pod\nmetadata: {name: a, namespace: d}\nspec: {nodeName: n1, containers: []}\n",
        "kind: Pod\nmetadata: {name: b, namespace: d}\nspec: {containers: []}\n",
    )
    path = tmp_path / "c.yaml"
    path.write_text("---\n".join(docs))
    from_file = load_cluster([path])
    from_objects = cluster_from_objects(_objects(*docs))
    assert [n.name for n in from_objects.nodes] == [n.name for n in from_file.nodes] == ["n1"]
    assert [p.key for p in from_objects.bound_pods] == ["d/a"]
    assert [p.key for p in from_objects.pending_pods] == ["d/b"]


def test_cluster_from_objects_skips_an_unreadable_object_with_a_note_when_asked() -> None:
    docs = (
        "kind: Node\nmetadata: {name: n1, annotations: {gputopo.io/topology: '{x'}}\n",
        "kind: Node\nmetadata: {name: n2, labels: [not, a, map]}\n",
        "kind: Node\nmetadata: {name: n3}\n",
    )
    with pytest.raises(SchedulerInputError, match=r"^live cluster: Node n1: metadata\.annotations"):
        cluster_from_objects(_objects(*docs))
    cluster = cluster_from_objects(_objects(*docs), skip_invalid=True)
    # The unreadable annotation: kept, as the running scheduler keeps it, read from its labels.
    assert [n.name for n in cluster.nodes] == ["n1", "n3"]
    first, second = cluster.notes
    assert first.startswith("live cluster: Node n1: ")
    assert first.endswith("; its labels describe its GPUs instead")
    assert second.startswith("live cluster: Node n2: metadata.labels") and second.endswith(
        "; skipped"
    )


def test_placing_freezes_the_long_lived_objects_only_while_it_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[int] = []
    real = simulate_module.schedule_one

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(gc.get_freeze_count())
        return real(*args, **kwargs)

    monkeypatch.setattr(simulate_module, "schedule_one", spy)
    cluster = cluster_from_objects(
        [("nodes.yaml", node("a")), ("pods.yaml", pod("p")), ("pods.yaml", pod("q"))]
    )
    assert gc.get_freeze_count() == 0
    _, results = simulate_module.simulate(cluster)
    assert [r.node for r in results] == ["a", "a"]
    assert len(seen) == 2 and all(count > 0 for count in seen)  # frozen while placing
    assert gc.get_freeze_count() == 0  # and thawed after
    gc.freeze()  # someone else's freeze is left as it is
    try:
        frozen = gc.get_freeze_count()
        simulate_module.simulate(cluster)
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


def test_the_scheduler_starts_no_blas_threads() -> None:
    # numpy's OpenBLAS would start a spinning worker per core at import (docs/performance.md)
    script = (
        "import os, sys\n"
        "from gputopo.scheduler.cli import main\n"
        f"status = main(['simulate', '--cluster', {SAMPLE!r}, '--output', 'json'])\n"
        "assert 'numpy' in sys.modules and status == 0\n"
        "print(len(os.listdir('/proc/self/task')), file=sys.stderr)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "1"  # the main thread only
