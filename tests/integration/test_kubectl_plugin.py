"""``kubectl gputopo`` against the real API server: nodes, topo and why on live objects.

The GPU nodes are kwok-managed Nodes (kwok runs their pods); one is described by the real agent
(``gputopo-agent run --once --mock dgx-h100``), the others by annotations a test writes. No
scheduler runs, so a pod for gputopo's scheduler stays pending for ``why`` to explain. The
console script is run once as a subprocess, as kubectl runs a plugin; the rest call ``main``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from gputopo.agent.annotation import topology_annotation_value
from gputopo.agent.topology import Interconnect, NvlinkDomain
from gputopo.core.contract import DEFAULT_CONTRACT
from gputopo.kubectl.cli import main
from tests.controlplane import ControlPlane
from tests.controlplane.kubeconfig import write_kubeconfig
from tests.integration.scheduler_env import (
    Cluster,
    gpu_node,
    gpu_pod,
    pod_scheduled_condition,
    running_runtime,
)
from tests.polling import eventually
from tests.unit.agent.machines import dgx_h100, h100

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
C = DEFAULT_CONTRACT


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _name(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:6]}"


def _kubeconfig(plane: ControlPlane, name: str, namespace: str | None = None) -> Path:
    """The admin's kubeconfig, its context's namespace set as kubectl users set it."""
    assert plane.pki is not None
    path = write_kubeconfig(
        plane.workdir / "kubeconfigs" / f"{name}.kubeconfig",
        plane.url,
        plane.pki.ca_file,
        token=plane.admin_token,
        user=name,
    )
    if namespace:
        document = yaml.safe_load(path.read_text())
        document["contexts"][0]["context"]["namespace"] = namespace
        path.write_text(yaml.safe_dump(document))
    return path


def _annotated_node(name: str, annotation: str | None, gpus: int = 8) -> dict[str, object]:
    node = gpu_node(name, gpus)
    metadata = node["metadata"]
    assert isinstance(metadata, dict)
    metadata["labels"][C.gpu_present] = "true"
    if annotation is not None:
        metadata["annotations"][C.topology_annotation] = annotation
    return node


def _two_domain_h100_annotation() -> str:
    gpus = tuple(h100(i, numa=i // 4, domain=i // 4) for i in range(8))
    domains = tuple(
        NvlinkDomain(id=d, gpus=tuple(range(4 * d, 4 * d + 4)), via=Interconnect.NVLINK)
        for d in range(2)
    )
    topology = replace(
        dgx_h100(), gpus=gpus, nvlink_domains=domains, interconnect=Interconnect.NVLINK
    )
    return topology_annotation_value(topology)


def _agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from agent.cli import main; raise SystemExit(main())", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )


def _plugin_script() -> str:
    """``kubectl-gputopo`` as installed next to this interpreter (what kubectl finds on PATH)."""
    beside = Path(sys.executable).parent / "kubectl-gputopo"
    found = str(beside) if beside.exists() else shutil.which("kubectl-gputopo")
    assert found, "the kubectl-gputopo console script is not installed (pip install -e .)"
    return found


def _pod_running(cluster: Cluster, namespace: str, name: str) -> bool:
    return bool(cluster.pod(namespace, name).get("status", {}).get("phase") == "Running")


def test_nodes_and_topo_on_a_node_the_agent_published(
    control_plane: ControlPlane,
    cluster: Cluster,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    node = _name("dgx")
    cluster.create_node(gpu_node(node, 8))
    kubeconfig = _kubeconfig(control_plane, node)
    agent = _agent(
        "run", "--once", "--mock", "dgx-h100", "--node-name", node, "--kubeconfig", str(kubeconfig)
    )
    assert agent.returncode == 0, agent.stderr
    for pod, gpus in (("train-0", 3), ("train-1", 2)):
        cluster.create_pod(namespace, gpu_pod(pod, gpus))
        cluster.bind(namespace, pod, node)
    eventually(lambda: _pod_running(cluster, namespace, "train-1"), what="kwok runs train-1")

    # Once through the console script, as `kubectl gputopo nodes -o json` runs it.
    completed = subprocess.run(
        [_plugin_script(), "nodes", "-o", "json", "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    rows = {row["name"]: row for row in json.loads(completed.stdout)["nodes"]}
    row = rows[node]
    assert (row["model"], row["gpus"], row["free"]) == ("H100", 8, 3)
    [domain] = row["nvlinkDomains"]
    assert (domain["domain"], domain["gpus"], len(domain["free"])) == (0, list(range(8)), 3)
    assert (row["health"], row["sla"], row["interconnect"]) == ("ok", 1000, "nvswitch")
    assert row["layout"] == "annotation"

    status, out, _ = _run(capsys, "nodes", "--kubeconfig", str(kubeconfig))
    assert status == 0
    line = next(line for line in out.splitlines() if line.startswith(node + " "))
    assert line.split()[1:6] == ["H100", "8", "3", "nvl0:3/8", "ok"]

    # topo draws the published annotation as discover draws the machine it came from.
    status, topo, _ = _run(capsys, "topo", node, "--kubeconfig", str(kubeconfig))
    assert status == 0
    discover = _agent("discover", "--mock", "dgx-h100", "-o", "text")
    assert discover.returncode == 0, discover.stderr
    assert _section(topo, "NVLink domains")[2].split()[:3] == ["0", "nvswitch", "0-7"]
    identity = _gpu_identity(topo)
    assert len(identity) == 8 and identity == _gpu_identity(discover.stdout)
    assert _section(topo, "NUMA nodes")[2].split()[:2] == ["0", "0-55,112-167"]


def _section(text: str, title: str) -> list[str]:
    for block in text.split("\n\n"):
        lines = block.splitlines()
        if lines and lines[0] == title:
            return lines
    raise AssertionError(f"no {title!r} section in:\n{text}")


def _gpu_identity(text: str) -> list[tuple[str, ...]]:
    """Per GPU: index, bus id, NUMA node, NVLink domain (the facts the annotation keeps)."""
    rows = []
    for line in _section(text, "GPUs")[2:]:
        cells = line.split()
        if cells and cells[0].isdigit():
            bus = next(cell for cell in cells if cell.count(":") == 2)
            after = cells[cells.index(bus) + 1 :]
            rows.append((cells[0], bus, after[0], after[1]))
    return rows


def test_topo_errors_are_one_line(
    control_plane: ControlPlane, cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = str(_kubeconfig(control_plane, "topo-errors"))
    bare, broken = _name("bare"), _name("broken")
    cluster.create_node(_annotated_node(bare, None))
    cluster.create_node(_annotated_node(broken, '{"v": 1, "interconnect": "pcie", "gpus": 3}'))
    cases = {
        "no-such-node": 'node "no-such-node" not found',
        bare: f"node {bare!r} has no gputopo.io/topology annotation",
        broken: f"node {broken!r}: annotation gputopo.io/topology: ",
    }
    for name, expected in cases.items():
        status, out, err = _run(capsys, "topo", name, "--kubeconfig", kubeconfig)
        assert (status, out) == (1, ""), name
        assert err.startswith(f"kubectl-gputopo: error: {expected}"), err
        assert err.count("\n") == 1


def test_why_explains_a_pending_pod_on_the_live_cluster(
    control_plane: ControlPlane,
    cluster: Cluster,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    two, tainted = _name("h100-2x4"), _name("h100-sla")
    cluster.create_node(_annotated_node(two, _two_domain_h100_annotation()))
    sla_taint = {"key": C.sla_taint, "value": "900", "effect": "NoSchedule"}
    tainted_node = _annotated_node(tainted, topology_annotation_value(dgx_h100()))
    tainted_node["spec"] = {"taints": [sla_taint]}
    cluster.create_node(tainted_node)
    cluster.create_pod(namespace, gpu_pod("holder", 3))
    cluster.bind(namespace, "holder", two)
    cluster.create_pod(namespace, gpu_pod("train", 6))
    cluster.create_pod(namespace, gpu_pod("small", 2))
    eventually(lambda: _pod_running(cluster, namespace, "holder"), what="kwok runs holder")
    # The context's namespace is the default, as for kubectl.
    kubeconfig = str(_kubeconfig(control_plane, "why", namespace=namespace))

    status, out, err = _run(capsys, "why", "train", "--kubeconfig", kubeconfig, "-o", "json")
    assert status == 0, err
    simulation = json.loads(out)["simulation"]
    assert simulation["node"] is None
    assert simulation["message"].startswith("0/")
    assert simulation["nodes"][two]["reasons"] == ["Insufficient nvidia.com/gpu"]
    assert simulation["nodes"][tainted]["reasons"] == [
        "node(s) had untolerated taint {gputopo.io/sla: 900}"
    ]

    status, out, _ = _run(capsys, "why", "small", "-n", namespace, "--kubeconfig", kubeconfig)
    assert status == 0
    assert f"pod {namespace}/small: Pending, schedulerName gputopo-scheduler" in out
    assert f"fits: would be placed on {two}" in out

    status, out, _ = _run(capsys, "--kubeconfig", kubeconfig, "why", "holder")
    assert (status, out) == (
        0,
        f"pod {namespace}/holder is bound to node {two}: nothing to explain.\n",
    )

    status, out, err = _run(capsys, "why", "ghost", "--kubeconfig", kubeconfig)
    assert (status, out) == (1, "")
    assert err == f'kubectl-gputopo: error: pod "ghost" not found in namespace "{namespace}"\n'


def test_why_says_what_the_running_scheduler_says(
    control_plane: ControlPlane,
    cluster: Cluster,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A differential check: gputopo's scheduler runtime, on the same live objects, refuses the
    pod with the message `why` simulates (then its preemption verdict, which simulate lacks)."""
    two, tainted = _name("h100-2x4"), _name("h100-sla")
    cluster.create_node(_annotated_node(two, _two_domain_h100_annotation()))
    tainted_node = _annotated_node(tainted, topology_annotation_value(dgx_h100()))
    tainted_node["spec"] = {
        "taints": [{"key": C.sla_taint, "value": "900", "effect": "NoSchedule"}]
    }
    cluster.create_node(tainted_node)
    holder = gpu_pod("holder", 6)
    holder["spec"]["nodeName"] = two
    cluster.create_pod(namespace, holder)
    with running_runtime(control_plane):
        cluster.create_pod(namespace, gpu_pod("train", 4))
        condition = eventually(
            lambda: pod_scheduled_condition(cluster.pod(namespace, "train")),
            30,
            "the runtime's PodScheduled condition",
        )
    kubeconfig = str(_kubeconfig(control_plane, "why-differential"))
    status, out, err = _run(capsys, "why", "train", "-n", namespace, "--kubeconfig", kubeconfig,
                            "-o", "json")  # fmt: skip
    assert status == 0, err
    simulated = json.loads(out)["simulation"]["message"]
    assert simulated.startswith("0/") and f"{{{C.sla_taint}: 900}}" in simulated
    assert condition["reason"] == "Unschedulable"
    assert condition["message"].startswith(simulated + " preemption: ")

    status, out, _ = _run(capsys, "why", "pod/train", "-n", namespace, "--kubeconfig", kubeconfig)
    assert f"  the pod says: Unschedulable: {condition['message']}" in out


def test_forbidden_is_one_line(
    control_plane: ControlPlane, namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    control_plane.create_service_account(namespace, "nobody")
    token = control_plane.service_account_token(namespace, "nobody")
    kubeconfig = str(control_plane.kubeconfig_for_token(token, _name("nobody")))
    for argv in (("nodes",), ("topo", "any"), ("why", "any", "-n", namespace)):
        status, out, err = _run(capsys, *argv, "--kubeconfig", kubeconfig)
        assert (status, out) == (1, ""), argv
        assert err.startswith("kubectl-gputopo: error: ") and "HTTP 403 Forbidden" in err, err
        assert err.count("\n") == 1
