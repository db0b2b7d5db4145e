"""DRA objects for the allocator tests: nodes of a machine profile with the agent's real
topology annotation and the slices NVIDIA's DRA driver would publish for them."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

from gputopo.agent.annotation import topology_annotation_value
from gputopo.agent.discovery import discover
from gputopo.mocks import resourceslices
from gputopo.mocks.fake_pynvml import make_fake_pynvml
from gputopo.mocks.profile import load_profile
from gputopo.mocks.sysfs import build_sysfs
from gputopo.scheduler.dra.inventory import NodeInventory, node_inventories
from gputopo.scheduler.dra.model import (
    DeviceClass,
    ResourceClaim,
    parse_device_class,
    parse_resource_claim,
    parse_resource_slice,
)
from gputopo.scheduler.dra.topology import NodeTopology, node_topology
from gputopo.scheduler.model import parse_node


@functools.cache
def topology_annotation(profile_name: str) -> str:
    profile = load_profile(profile_name)
    with tempfile.TemporaryDirectory() as tmp:
        topology = discover(make_fake_pynvml(profile), build_sysfs(profile, Path(tmp)), "n")
    return topology_annotation_value(topology)


def node_object(profile_name: str, name: str) -> dict[str, Any]:
    return {
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name},
            "annotations": {"gputopo.io/topology": topology_annotation(profile_name)},
        },
        "spec": {},
        "status": {"allocatable": {"cpu": "64", "memory": "512Gi", "pods": "110"}},
    }


def node_setup(
    profile_name: str, name: str = "node-a", *, partitionable: bool = False
) -> tuple[NodeInventory, NodeTopology]:
    profile = load_profile(profile_name)
    slices = [
        parse_resource_slice(s)
        for s in resourceslices.resource_slices(profile, name, partitionable=partitionable)
    ]
    topology = node_topology(parse_node(node_object(profile_name, name)))
    assert topology is not None
    return node_inventories(slices)[name], topology


def classes() -> dict[str, DeviceClass]:
    return {c.name: c for c in map(parse_device_class, resourceslices.device_classes())}


def exactly(
    name: str,
    count: int = 1,
    device_class: str = "gpu.nvidia.com",
    selectors: tuple[str, ...] = (),
    mode: str = "ExactCount",
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"deviceClassName": device_class, "allocationMode": mode, **extra}
    if mode == "ExactCount":
        body["count"] = count
    if selectors:
        body["selectors"] = [{"cel": {"expression": e}} for e in selectors]
    return {"name": name, "exactly": body}


def claim_object(
    name: str,
    requests: list[dict[str, Any]],
    constraints: list[dict[str, Any]] | None = None,
    namespace: str = "default",
) -> dict[str, Any]:
    devices: dict[str, Any] = {"requests": requests}
    if constraints:
        devices["constraints"] = constraints
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
        "spec": {"devices": devices},
    }


def claim(name: str, *requests: dict[str, Any], **kwargs: Any) -> ResourceClaim:
    return parse_resource_claim(claim_object(name, list(requests), **kwargs))
