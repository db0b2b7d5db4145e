"""Hostile cluster files for `simulate` (issue 17): one line naming file, object and field, exit 2.

Each input here used to hang, raise a traceback or take a minute. In-process through the CLI's
`main`, so the one-line convention is what is checked; a handful go through a subprocess with
a timeout, as a user would run them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gputopo.scheduler import simulate as simulate_module
from gputopo.scheduler.cli import main
from gputopo.scheduler.errors import SchedulerInputError
from gputopo.scheduler.simulate import MAX_CLUSTER_FILE_BYTES, load_cluster

NODE = """\
apiVersion: v1
kind: Node
metadata:
  name: n1
  labels: {{kubernetes.io/hostname: n1}}
  annotations: {annotations}
status:
  allocatable: {{cpu: {cpu}, memory: {memory}, pods: "110"}}
"""
POD = """\
---
apiVersion: v1
kind: Pod
metadata: {{name: p1, namespace: ml}}
spec:
  tolerations: {tolerations}
  affinity: {affinity}
  containers:
  - name: c
    resources: {{requests: {{cpu: {pod_cpu}, memory: 1Gi}}}}
"""
DEFAULTS = {
    "annotations": "{}",
    "cpu": '"8"',
    "memory": '"64Gi"',
    "tolerations": "[]",
    "affinity": "{}",
    "pod_cpu": '"1"',
}
DIGITS_5000 = "9" * 5000


def _cluster(**fields: str) -> str:
    values = DEFAULTS | fields
    return NODE.format(**values) + POD.format(**values)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _gt(values: str) -> str:
    return (
        "{nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: "
        f"[{{matchExpressions: [{{key: sla, operator: Gt, values: [{values}]}}]}}]}}}}}}"
    )


def _annotation(json_text: str) -> str:
    return "{gputopo.io/topology: '" + json_text + "'}"


REFUSED = [
    # (id, cluster text, what the one line must say after the file name)
    (
        "node-cpu-exponent-beyond-int64",
        _cluster(cpu='"1e99999999999999999999"'),
        "document 1: Node n1: status.allocatable.cpu: invalid quantity",
    ),
    (
        "yaml-float-1e400",
        _cluster(cpu="1.0e+400"),
        "document 1: status.allocatable.cpu: number inf is not finite",
    ),
    ("yaml-5000-digit-integer", _cluster(memory=DIGITS_5000), "not valid YAML"),
    (
        "yaml-integer-beyond-int64",
        _cluster(memory=str(2**64)),
        "document 1: status.allocatable.memory: integer out of the int64 range",
    ),
    (
        "pod-cpu-garbage",
        _cluster(pod_cpu='"lots"'),
        "Pod ml/p1: spec.containers[0].resources.requests.cpu: invalid quantity 'lots'",
    ),
    (
        "toleration-value-list",
        _cluster(tolerations="[{key: a, operator: Gt, value: [1]}]"),
        "Pod ml/p1: spec.tolerations[0].value: expected a string",
    ),
    (
        "toleration-not-an-object",
        _cluster(tolerations="[5]"),
        "Pod ml/p1: spec.tolerations[0]: expected an object",
    ),
    (
        "toleration-seconds-text",
        _cluster(tolerations="[{key: a, operator: Exists, tolerationSeconds: soon}]"),
        "Pod ml/p1: spec.tolerations[0].tolerationSeconds: expected an integer",
    ),
    (
        "toleration-5000-digit-integer",
        _cluster(tolerations=f"[{{key: a, operator: Gt, value: {DIGITS_5000}}}]"),
        "not valid YAML",
    ),
    (
        "topology-annotation-garbage",
        _cluster(annotations=_annotation("garbage{")),
        "Node n1: metadata.annotations[gputopo.io/topology]: not valid JSON",
    ),
    (
        "topology-annotation-deep",
        _cluster(annotations=_annotation('{"v":1,"gpus":' + "[" * 5000 + "]" * 5000 + "}")),
        "Node n1: metadata.annotations[gputopo.io/topology]:",
    ),
    (
        "topology-annotation-5000-digit-number",
        _cluster(annotations=_annotation('{"v":' + DIGITS_5000 + "}")),
        "Node n1: metadata.annotations[gputopo.io/topology]: not valid JSON",
    ),
    (
        "topology-annotation-infinite-number",
        _cluster(annotations=_annotation('{"v":1,"gpus":[{"index":1e400}]}')),
        "Node n1: metadata.annotations[gputopo.io/topology]: gpus[0].index: number inf",
    ),
    (
        "deep-nesting",
        "kind: Node\nmetadata: {name: n, labels: " + "{a: " * 200 + "x" + "}" * 201 + "\n",
        "nested deeper than",
    ),
    (
        "alias-bomb",
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n"
            for i in range(7)
        ),
        "once aliases are expanded",
    ),
]


@pytest.mark.parametrize(
    ("content", "expected"), [case[1:] for case in REFUSED], ids=[case[0] for case in REFUSED]
)
def test_hostile_cluster_file_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, expected: str
) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(content)
    status, out, err = _run(capsys, "simulate", "--cluster", str(path))
    assert status == 2, err
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith(f"gputopo-scheduler: error: {path}")
    assert expected in err
    assert len(err) < 600


ACCEPTED = [
    # quantities Kubernetes accepts: saturated or rounded, scheduled like any other value
    ("node-cpu-1e99999999", _cluster(cpu='"1e99999999"'), "ml/p1  ->  n1"),
    ("node-memory-1e99999999", _cluster(memory='"1e99999999"'), "ml/p1  ->  n1"),
    ("node-cpu-1e400", _cluster(cpu='"1e400"'), "ml/p1  ->  n1"),
    ("pod-cpu-1e-99999999", _cluster(pod_cpu='"1e-99999999"'), "ml/p1  ->  n1"),
    ("pod-cpu-1e99999999", _cluster(pod_cpu='"1e99999999"'), "Insufficient cpu"),
    ("pod-cpu-exponent-form", _cluster(pod_cpu='"5E-1"'), "ml/p1  ->  n1"),
    ("pod-cpu-yaml-int", _cluster(pod_cpu="2"), "ml/p1  ->  n1"),
    ("node-memory-big-yaml-int", _cluster(memory=str(2**63 - 1)), "ml/p1  ->  n1"),
    ("gt-5000-digits", _cluster(affinity=_gt(f'"{DIGITS_5000}"')), "didn't match"),
    (
        "toleration-gt-5000-digits",
        _cluster(tolerations=f'[{{key: a, operator: Gt, value: "{DIGITS_5000}"}}]'),
        "ml/p1  ->  n1",
    ),
]


@pytest.mark.parametrize(
    ("content", "expected"), [case[1:] for case in ACCEPTED], ids=[case[0] for case in ACCEPTED]
)
def test_extreme_but_valid_values_are_scheduled_with_kubernetes_limits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, expected: str
) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(content)
    status, out, err = _run(capsys, "simulate", "--cluster", str(path))
    assert status == 0, err
    assert expected in out


def test_file_over_the_size_limit_is_refused_before_it_is_parsed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(simulate_module, "MAX_CLUSTER_FILE_BYTES", 1000)
    path = tmp_path / "big.yaml"
    path.write_text(_cluster() + "#" * 2000 + "\n")
    status, _, err = _run(capsys, "simulate", "--cluster", str(path))
    assert status == 2
    assert err.strip() == (
        f"gputopo-scheduler: error: cluster file {path}: larger than 1000 bytes, "
        "the limit for a cluster file"
    )


def test_the_documented_size_limit_is_32_mib() -> None:
    assert MAX_CLUSTER_FILE_BYTES == 32 * 1024 * 1024


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"kind: Node\nmetadata: {name: \xff}\n", "not UTF-8 text (byte 28: 0xff)"),
        ("kind: Node\n".encode("utf-16"), "not UTF-8 text"),
    ],
)
def test_non_utf8_cluster_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, expected: str
) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_bytes(content)
    status, _, err = _run(capsys, "simulate", "--cluster", str(path))
    assert status == 2
    assert err.count("\n") == 1
    assert f"cluster file {path}: {expected}" in err


def test_a_directory_is_not_a_cluster_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = _run(capsys, "simulate", "--cluster", str(tmp_path))
    assert status == 2
    assert f"cluster file {tmp_path}: cannot read" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["--cluster", "/dev/zero"],
        ["--cluster", "{hostile}"],
    ],
    ids=["dev-zero", "node-memory-1e99999999-pod-cpu-1e99999999"],
)
def test_entry_point_answers_hostile_files_quickly(tmp_path: Path, argv: list[str]) -> None:
    """As a user runs it: the process ends (a timeout fails the test, it does not hang it)."""
    hostile = tmp_path / "hostile.yaml"
    hostile.write_text(_cluster(memory='"1e99999999"', pod_cpu='"1e99999999"'))
    command = [sys.executable, "-m", "gputopo.scheduler.cli", "simulate"]
    command += [arg.format(hostile=hostile) for arg in argv]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert "Traceback" not in completed.stderr
    if argv[1] == "/dev/zero":
        assert completed.returncode == 2
        assert completed.stderr.count("\n") == 1
        assert "cluster file /dev/zero: larger than" in completed.stderr
    else:
        assert completed.returncode == 0, completed.stderr
        assert "Insufficient cpu" in completed.stdout


# --- random structures ----------------------------------------------------------------------------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["1e99999999", "1e-99999999", "8Ei", "Gt", "NoSchedule", "Exists", "cpu"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_FIELDS = [
    ("metadata",),
    ("metadata", "labels"),
    ("metadata", "annotations"),
    ("spec",),
    ("spec", "taints"),
    ("spec", "tolerations"),
    ("spec", "affinity"),
    ("spec", "containers"),
    ("spec", "nodeName"),
    ("spec", "priority"),
    ("spec", "topologySpreadConstraints"),
    ("status", "allocatable"),
    ("status", "capacity"),
    ("items",),
]


def _skeleton(kind: str) -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {"name": "x"},
        "spec": {"containers": [{"name": "c"}]},
        "status": {"allocatable": {"cpu": "1"}},
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["Node", "Pod", "Namespace", "PriorityClass", "List", "Other"]),
    field=st.sampled_from(_FIELDS),
    value=_VALUES,
)
def test_random_cluster_structure_loads_or_is_one_input_error(
    tmp_path_factory: pytest.TempPathFactory, kind: str, field: tuple[str, ...], value: Any
) -> None:
    obj = _skeleton(kind)
    target = obj
    for key in field[:-1]:
        target = target.setdefault(key, {})
    target[field[-1]] = value
    path = tmp_path_factory.mktemp("fuzz") / "cluster.yaml"
    path.write_text(yaml.safe_dump(obj))
    try:
        load_cluster([path])
    except SchedulerInputError as error:
        message = str(error)
        assert "\n" not in message
        assert message.startswith((str(path), f"cluster file {path}"))
