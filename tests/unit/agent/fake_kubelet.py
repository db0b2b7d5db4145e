"""A real gRPC server speaking the kubelet's pod-resources API v1 on a unix socket.

Only the kubelet is faked: the agent's client talks to it through grpcio exactly as it would to
a kubelet, over the generated ``v1.PodResourcesLister`` service.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc

from gputopo.agent.podresources_pb import api_pb2, api_pb2_grpc


@dataclass
class FakeKubeletState:
    """What the fake kubelet reports; tests mutate it between calls."""

    # (namespace, pod) -> container -> resource name -> [(device_id, numa node or None)]
    pods: dict[tuple[str, str], dict[str, dict[str, list[tuple[str, int | None]]]]] = field(
        default_factory=dict
    )
    # resource name -> [(device_id, numa node or None)]
    allocatable: dict[str, list[tuple[str, int | None]]] = field(default_factory=dict)
    allocatable_status: grpc.StatusCode | None = None  # set to fail GetAllocatableResources
    list_calls: int = 0
    allocatable_calls: int = 0

    def allocate(
        self,
        namespace: str,
        pod: str,
        container: str,
        resource: str,
        devices: Sequence[tuple[str, int | None]],
    ) -> None:
        containers = self.pods.setdefault((namespace, pod), {})
        containers.setdefault(container, {}).setdefault(resource, []).extend(devices)


def _container_devices(
    resource: str, devices: Sequence[tuple[str, int | None]]
) -> list[api_pb2.ContainerDevices]:
    """One ContainerDevices per NUMA node, the way the kubelet groups them."""
    by_numa: dict[int | None, list[str]] = {}
    for device_id, numa in devices:
        by_numa.setdefault(numa, []).append(device_id)
    result = []
    for numa, ids in by_numa.items():
        topology = api_pb2.TopologyInfo(nodes=[] if numa is None else [api_pb2.NUMANode(ID=numa)])
        result.append(
            api_pb2.ContainerDevices(resource_name=resource, device_ids=ids, topology=topology)
        )
    return result


class _Servicer(api_pb2_grpc.PodResourcesListerServicer):  # type: ignore[misc]
    def __init__(self, state: FakeKubeletState) -> None:
        self.state = state

    def List(self, request: Any, context: Any) -> api_pb2.ListPodResourcesResponse:
        self.state.list_calls += 1
        pods = []
        for (namespace, pod), containers in self.state.pods.items():
            container_messages = []
            for name, resources in containers.items():
                devices: list[api_pb2.ContainerDevices] = []
                for resource, ids in resources.items():
                    devices.extend(_container_devices(resource, ids))
                container_messages.append(
                    api_pb2.ContainerResources(name=name, devices=devices, cpu_ids=[2, 3])
                )
            pods.append(
                api_pb2.PodResources(name=pod, namespace=namespace, containers=container_messages)
            )
        return api_pb2.ListPodResourcesResponse(pod_resources=pods)

    def GetAllocatableResources(
        self, request: Any, context: Any
    ) -> api_pb2.AllocatableResourcesResponse:
        self.state.allocatable_calls += 1
        if self.state.allocatable_status is not None:
            context.abort(self.state.allocatable_status, "disabled by the test")
        devices: list[api_pb2.ContainerDevices] = []
        for resource, ids in self.state.allocatable.items():
            devices.extend(_container_devices(resource, ids))
        return api_pb2.AllocatableResourcesResponse(devices=devices, cpu_ids=list(range(8)))


@contextmanager
def short_socket_dir() -> Iterator[str]:
    """A short directory for sockets: unix socket paths must stay under 108 bytes."""
    directory = tempfile.mkdtemp(prefix="gt-kubelet-", dir="/tmp")
    try:
        yield directory
    finally:
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)


@contextmanager
def fake_kubelet(
    socket_path: str, state: FakeKubeletState | None = None
) -> Iterator[FakeKubeletState]:
    """Serve pod-resources on ``socket_path`` until the block ends."""
    state = state or FakeKubeletState()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    api_pb2_grpc.add_PodResourcesListerServicer_to_server(_Servicer(state), server)
    server.add_insecure_port("unix:" + socket_path)
    server.start()
    try:
        yield state
    finally:
        server.stop(grace=None).wait()
        if os.path.exists(socket_path):
            os.unlink(socket_path)
