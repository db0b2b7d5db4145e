"""`simulate` with DRA: DeviceClasses, ResourceSlices, claims and templates from the YAML,
allocations printed under "claims", --explain says per node why no device set fits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from gputopo.mocks import resourceslices
from gputopo.mocks.profile import load_profile
from gputopo.scheduler.cli import main
from tests.unit.scheduler.dra.dra_builders import claim_object, exactly, node_object

GPU = "gpu.nvidia.com"


def _pod(name: str, claims: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
        "spec": {
            "containers": [{"name": "c", "image": "x"}],
            "resourceClaims": claims,
        },
    }


def _template(name: str, count: int) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"spec": {"devices": {"requests": [exactly("gpus", count)]}}},
    }


def _cluster(tmp_path: Path, *extra: dict[str, Any], nodes: tuple[str, ...] = ("a",)) -> str:
    documents: list[dict[str, Any]] = [*resourceslices.device_classes()]
    for name in nodes:
        documents.append(node_object("dgx-h100", name))
        documents.extend(resourceslices.resource_slices(load_profile("dgx-h100"), name))
    documents.extend(extra)
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    return str(path)


def _simulate(capsys: pytest.CaptureFixture[str], path: str, *flags: str) -> dict[str, Any]:
    status = main(["simulate", "--cluster", path, "--output", "json", *flags])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    return {entry["pod"]: entry for entry in json.loads(captured.out)["pods"]}


def test_template_claims_get_aligned_devices_and_are_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _cluster(
        tmp_path,
        _template("four-gpus", 4),
        _pod("train-0", [{"name": "gpus", "resourceClaimTemplateName": "four-gpus"}]),
        _pod("train-1", [{"name": "gpus", "resourceClaimTemplateName": "four-gpus"}]),
        _pod("train-2", [{"name": "gpus", "resourceClaimTemplateName": "four-gpus"}]),
    )
    pods = _simulate(capsys, path)
    first, second = pods["default/train-0"], pods["default/train-1"]
    assert first["node"] == second["node"] == "a"
    devices = [d["device"] for d in first["claims"]["gpus"]]
    assert len(devices) == 4
    assert first["claims"]["gpus"][0] == {
        "request": "gpus",
        "driver": GPU,
        "pool": "a",
        "device": devices[0],
    }
    assert not set(devices) & {d["device"] for d in second["claims"]["gpus"]}
    # dgx-h100: GPUs 0-3 on NUMA node 0, 4-7 on NUMA node 1: each claim stays on one
    assert sorted(devices) in (
        ["gpu-0", "gpu-1", "gpu-2", "gpu-3"],
        ["gpu-4", "gpu-5", "gpu-6", "gpu-7"],
    )
    assert pods["default/train-2"]["node"] is None
    assert "0 of 4 matching devices available" in pods["default/train-2"]["message"]


def test_claim_shared_by_two_pods_is_allocated_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = claim_object("shared", [exactly("gpu", 2)])
    path = _cluster(
        tmp_path,
        shared,
        _pod("reader-0", [{"name": "g", "resourceClaimName": "shared"}]),
        _pod("reader-1", [{"name": "g", "resourceClaimName": "shared"}]),
        nodes=("a", "b"),
    )
    pods = _simulate(capsys, path)
    first, second = pods["default/reader-0"], pods["default/reader-1"]
    assert first["node"] == second["node"]
    assert first["claims"] == second["claims"]


def test_explain_says_per_node_why_no_device_set_fits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wants = claim_object(
        "old-driver",
        [
            exactly(
                "gpu",
                1,
                selectors=(
                    f"device.attributes['{GPU}'].driverVersion.isLessThan(semver('500.0.0'))",
                ),
            )
        ],
    )
    path = _cluster(tmp_path, wants, _pod("p", [{"name": "g", "resourceClaimName": "old-driver"}]))
    pods = _simulate(capsys, path, "--explain")
    entry = pods["default/p"]
    assert entry["node"] is None
    assert entry["nodes"]["a"]["feasible"] is False
    assert "0 of 1 matching devices available" in entry["nodes"]["a"]["reasons"][0]


def test_missing_claim_is_kube_schedulers_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _cluster(tmp_path, _pod("p", [{"name": "g", "resourceClaimName": "nope"}]))
    pods = _simulate(capsys, path)
    assert pods["default/p"]["node"] is None
    assert 'resourceclaim "nope" not found' in pods["default/p"]["message"]


def test_bad_dra_object_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = claim_object("bad", [exactly("gpu", 0)])
    path = _cluster(tmp_path, bad)
    status = main(["simulate", "--cluster", path])
    err = capsys.readouterr().err
    assert status != 0
    assert "ResourceClaim default/bad" in err
    assert "count" in err
    assert len(err.strip().splitlines()) == 1


def _gpu_pod(name: str, gpus: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
        "spec": {
            "containers": [
                {"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}
            ]
        },
    }


def test_plain_nvidia_gpu_pods_are_served_by_dra_where_the_node_has_no_device_plugin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the nodes advertise no nvidia.com/gpu: the DeviceClass gpu.nvidia.com maps it to DRA
    path = _cluster(tmp_path, _gpu_pod("one", 1), _gpu_pod("four", 4), _gpu_pod("too-many", 4))
    pods = _simulate(capsys, path)
    one, four = pods["default/one"], pods["default/four"]
    assert one["node"] == four["node"] == "a"
    (first,) = one["claims"]["extended-resources"]
    devices = sorted(d["device"] for d in four["claims"]["extended-resources"])
    assert first["device"] not in devices
    # the 4 GPUs come from the NUMA node the first pod left whole
    assert devices in (["gpu-0", "gpu-1", "gpu-2", "gpu-3"], ["gpu-4", "gpu-5", "gpu-6", "gpu-7"])
    assert pods["default/too-many"]["node"] is None
    assert "3 of 4 matching devices available" in pods["default/too-many"]["message"]
